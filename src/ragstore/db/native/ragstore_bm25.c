/*
 * ragstore's native BM25 kernel for the embedded PostgreSQL server.
 *
 * ragstore_native.bm25_contenders: revision 0023's ragstore_bm25_contenders in C, the same
 * arrays bit for bit. Each term (array order) with a non-NULL cut has its postings with
 * impact >= cut read through a saved plan (SPI: the executor sees to visibility, the index
 * order is the SQL statement's), a posting's share wr * impact - cb added to its chunk's
 * sum in a hash table in that order (the order and arithmetic of the SQL aggregate, so the
 * float sums are the same), the chunks whose (sum + rest) * 1.000001 >= theta and are not
 * in sids kept, sorted by bound DESC then chunk_id.
 *
 * ragstore (ragstore.db.native) compiles this file with the server's pg_config and
 * creates the function in the schema ragstore_native; ragstore_bm25_topk calls it where
 * it exists and the SQL function otherwise.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "nodes/params.h"
#include "tcop/dest.h"
#include "utils/array.h"
#include "utils/float.h"

PG_MODULE_MAGIC;

typedef struct ChunkEntry
{
	int64		chunk_id;
	float8		sum;
	char		status;
} ChunkEntry;

#define SH_PREFIX chunkhash
#define SH_ELEMENT_TYPE ChunkEntry
#define SH_KEY_TYPE int64
#define SH_KEY chunk_id
#define SH_HASH_KEY(tb, key) murmurhash64((uint64) (key))
#define SH_EQUAL(tb, a, b) ((a) == (b))
#define SH_SCOPE static inline
#define SH_DECLARE
#define SH_DEFINE
#include "lib/simplehash.h"

/* the postings of one term at or above its cut, in the index's order */
static const char *const POSTINGS_SQL =
"SELECT x.chunk_id, x.impact FROM bm25_postings x WHERE x.term_id = $1 AND x.impact >= $2";

static SPIPlanPtr postings_plan = NULL;

/* receives one term's postings straight from the executor (no tuple table) */
typedef struct Receiver
{
	DestReceiver pub;
	chunkhash_hash *chunks;
	float8		wr;
	float8		cb;
} Receiver;

static bool
receive_posting(TupleTableSlot *slot, DestReceiver *self)
{
	Receiver   *r = (Receiver *) self;
	bool		id_null;
	bool		impact_null;
	Datum		id = slot_getattr(slot, 1, &id_null);
	Datum		impact = slot_getattr(slot, 2, &impact_null);
	float8		g;
	ChunkEntry *e;
	bool		found;

	if (id_null || impact_null)
		return true;			/* NOT NULL columns */
	/* q.wr * x.impact - q.cb: float84mul, then float8mi */
	g = float8_mi(float8_mul(r->wr, (float8) DatumGetFloat4(impact)), r->cb);
	e = chunkhash_insert(r->chunks, DatumGetInt64(id), &found);
	/* sum(float8): the first value, then float8pl in input order */
	e->sum = found ? float8_pl(e->sum, g) : g;
	return true;
}

static void
receiver_startup(DestReceiver *self, int operation, TupleDesc typeinfo)
{
}

static void
receiver_shutdown(DestReceiver *self)
{
}

static void
receiver_destroy(DestReceiver *self)
{
}

typedef struct Kept
{
	float8		bound;
	int64		chunk_id;
} Kept;

/* ORDER BY bound DESC, chunk_id (float8 order: NaN above everything) */
static int
kept_cmp(const void *a, const void *b)
{
	const Kept *x = (const Kept *) a;
	const Kept *y = (const Kept *) b;
	int			c = float8_cmp_internal(y->bound, x->bound);

	if (c != 0)
		return c;
	return (x->chunk_id > y->chunk_id) - (x->chunk_id < y->chunk_id);
}

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/* an element of a float8[] / int4[] as unnest pads it: NULL past its end */
static bool
element(Datum *values, bool *nulls, int n, int i, Datum *out)
{
	if (i >= n || nulls[i])
		return false;
	*out = values[i];
	return true;
}

PG_FUNCTION_INFO_V1(ragstore_bm25_contenders);

/*
 * bm25_contenders(ids int4[], ws float8[], cuts float8[], cbs float8[], ratio float8,
 *                 rest float8, theta float8, sids int8[],
 *                 OUT contenders int8[], OUT bounds float8[])
 */
Datum
ragstore_bm25_contenders(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		result[2] = {0, 0};
	bool		result_null[2] = {true, true};
	MemoryContext ctx = CurrentMemoryContext;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ragstore_native.bm25_contenders must return a record");
	tupdesc = BlessTupleDesc(tupdesc);

	/* a NULL among these: no posting passes (NULL sums and comparisons), as in SQL */
	if (!PG_ARGISNULL(0) && !PG_ARGISNULL(1) && !PG_ARGISNULL(2) && !PG_ARGISNULL(3) &&
		!PG_ARGISNULL(4) && !PG_ARGISNULL(5) && !PG_ARGISNULL(6))
	{
		Datum	   *ids,
				   *ws,
				   *cuts,
				   *cbs,
				   *sid_values = NULL;
		bool	   *ids_null,
				   *ws_null,
				   *cuts_null,
				   *cbs_null,
				   *sids_null = NULL;
		int			n_ids,
					n_ws,
					n_cuts,
					n_cbs,
					n_sids = 0;
		float8		ratio = PG_GETARG_FLOAT8(4);
		float8		rest = PG_GETARG_FLOAT8(5);
		float8		theta = PG_GETARG_FLOAT8(6);
		int			n_terms;
		int64	   *sids = NULL;
		bool		sid_is_null = false;
		chunkhash_hash *chunks;
		Receiver   *receiver;
		Kept	   *kept;
		int			n_kept = 0;
		chunkhash_iterator it;
		ChunkEntry *e;
		int			i;

		deconstruct_array_builtin(PG_GETARG_ARRAYTYPE_P(0), INT4OID, &ids, &ids_null, &n_ids);
		deconstruct_array_builtin(PG_GETARG_ARRAYTYPE_P(1), FLOAT8OID, &ws, &ws_null, &n_ws);
		deconstruct_array_builtin(PG_GETARG_ARRAYTYPE_P(2), FLOAT8OID, &cuts, &cuts_null,
								  &n_cuts);
		deconstruct_array_builtin(PG_GETARG_ARRAYTYPE_P(3), FLOAT8OID, &cbs, &cbs_null, &n_cbs);
		if (!PG_ARGISNULL(7))
		{
			deconstruct_array(PG_GETARG_ARRAYTYPE_P(7), INT8OID, sizeof(int64), FLOAT8PASSBYVAL,
							  TYPALIGN_DOUBLE, &sid_values, &sids_null, &n_sids);
			sids = palloc(sizeof(int64) * Max(n_sids, 1));
			for (i = 0; i < n_sids; i++)
			{
				if (sids_null[i])
					sid_is_null = true;
				sids[i] = DatumGetInt64(sid_values[i]);
			}
			qsort(sids, n_sids, sizeof(int64), int64_cmp);
		}
		n_terms = Max(Max(n_ids, n_ws), Max(n_cuts, n_cbs));

		chunks = chunkhash_create(ctx, 1024, NULL);
		receiver = palloc0(sizeof(Receiver));
		receiver->pub.receiveSlot = receive_posting;
		receiver->pub.rStartup = receiver_startup;
		receiver->pub.rShutdown = receiver_shutdown;
		receiver->pub.rDestroy = receiver_destroy;
		receiver->pub.mydest = DestNone;
		receiver->chunks = chunks;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "ragstore_native.bm25_contenders: SPI_connect failed");
		if (postings_plan == NULL)
		{
			Oid			types[2] = {INT4OID, FLOAT8OID};
			SPIPlanPtr	plan = SPI_prepare_cursor(POSTINGS_SQL, 2, types,
												  CURSOR_OPT_GENERIC_PLAN);

			if (plan == NULL)
				elog(ERROR, "ragstore_native.bm25_contenders: SPI_prepare failed: %s",
					 SPI_result_code_string(SPI_result));
			if (SPI_keepplan(plan) != 0)
				elog(ERROR, "ragstore_native.bm25_contenders: SPI_keepplan failed");
			postings_plan = plan;
		}
		for (i = 0; i < n_terms; i++)
		{
			Datum		id,
						w,
						cut,
						cb;
			ParamListInfo params;
			SPIExecuteOptions options;
			int			rc;

			/* a NULL cut is not read; a NULL id matches no posting; a NULL w or cb
			 * makes every share NULL, which sum() skips */
			if (!element(cuts, cuts_null, n_cuts, i, &cut) ||
				!element(ids, ids_null, n_ids, i, &id) ||
				!element(ws, ws_null, n_ws, i, &w) ||
				!element(cbs, cbs_null, n_cbs, i, &cb))
				continue;
			receiver->wr = float8_mul(DatumGetFloat8(w), ratio);	/* q.w * ratio */
			receiver->cb = DatumGetFloat8(cb);

			params = makeParamList(2);
			params->params[0].value = id;
			params->params[0].isnull = false;
			params->params[0].pflags = PARAM_FLAG_CONST;
			params->params[0].ptype = INT4OID;
			params->params[1].value = cut;
			params->params[1].isnull = false;
			params->params[1].pflags = PARAM_FLAG_CONST;
			params->params[1].ptype = FLOAT8OID;

			memset(&options, 0, sizeof(options));
			options.params = params;
			options.read_only = true;
			options.dest = (DestReceiver *) receiver;
			rc = SPI_execute_plan_extended(postings_plan, &options);
			/* SPI says SPI_OK_UTILITY for a SELECT whose rows went to a DestNone receiver */
			if (rc != SPI_OK_SELECT && rc != SPI_OK_UTILITY)
				elog(ERROR, "ragstore_native.bm25_contenders: reading postings failed: %s",
					 SPI_result_code_string(rc));
		}
		SPI_finish();

		/* HAVING (sum + rest) * 1.000001 >= theta, then NOT IN (sids) */
		kept = MemoryContextAlloc(ctx, sizeof(Kept) * Max(chunks->members, 1));
		if (!sid_is_null)		/* x NOT IN (..., NULL) is never true */
		{
			chunkhash_start_iterate(chunks, &it);
			while ((e = chunkhash_iterate(chunks, &it)) != NULL)
			{
				float8		bound = float8_mul(float8_pl(e->sum, rest), 1.000001);

				if (!float8_ge(bound, theta))
					continue;
				if (n_sids > 0 &&
					bsearch(&e->chunk_id, sids, n_sids, sizeof(int64), int64_cmp) != NULL)
					continue;
				kept[n_kept].bound = bound;
				kept[n_kept].chunk_id = e->chunk_id;
				n_kept++;
			}
		}
		if (n_kept > 0)
		{
			Datum	   *out_ids = palloc(sizeof(Datum) * n_kept);
			Datum	   *out_bounds = palloc(sizeof(Datum) * n_kept);

			qsort(kept, n_kept, sizeof(Kept), kept_cmp);
			for (i = 0; i < n_kept; i++)
			{
				out_ids[i] = Int64GetDatum(kept[i].chunk_id);
				out_bounds[i] = Float8GetDatum(kept[i].bound);
			}
			result[0] = PointerGetDatum(construct_array(out_ids, n_kept, INT8OID, sizeof(int64),
															  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			result[1] = PointerGetDatum(construct_array_builtin(out_bounds, n_kept, FLOAT8OID));
			result_null[0] = result_null[1] = false;
		}
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_null)));
}
