/*
 * ragstore's native BM25 kernel for the embedded PostgreSQL server.
 *
 * ragstore_native.bm25_contenders: revision 0023's ragstore_bm25_contenders in C, the same
 * arrays bit for bit. Each term (array order) with a non-NULL cut has its postings with
 * impact >= cut read from bm25_postings_impact_idx through the index AM, as an index-only
 * scan reads them (visibility map, else the heap under the statement's snapshot), or
 * through a saved plan (SPI) in a serializable transaction or where that index is not of
 * the expected shape, a posting's share wr * impact - cb added to its chunk's
 * sum in a hash table in that order (the order and arithmetic of the SQL aggregate, so the
 * float sums are the same), the chunks whose (sum + rest) * 1.000001 >= theta and are not
 * in sids kept, sorted by bound DESC then chunk_id.
 *
 * ragstore_native.bm25_score: revision 0009's ragstore_bm25_score in C, the same scores bit
 * for bit. Each chunk of ids (chunks_pkey probed through the index AM, the row visible to
 * the statement's snapshot; SPI where that does not apply, as above)
 * has its tsvector searched for the query's lexemes in C collation order (the tsvector's
 * own order), each match with positions adding w * tf * (k1 + 1) / (tf + k1 * (1 - b + b *
 * tsv_length / avgdl)), tf its positions, in that order, with PostgreSQL's float8
 * arithmetic; a chunk holding none of them returns no row.
 *
 * ragstore (ragstore.db.native) compiles this file with the server's pg_config and
 * creates the function in the schema ragstore_native; ragstore_bm25_topk calls it where
 * it exists and the SQL function otherwise.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/nbtree.h"
#include "access/relation.h"
#include "access/relscan.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/visibilitymap.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_am_d.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/params.h"
#include "tcop/dest.h"
#include "tsearch/ts_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/float.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"
#include "utils/tuplestore.h"
#include "varatt.h"

PG_MODULE_MAGIC;

typedef struct ChunkEntry
{
	int64		chunk_id;
	float8		sum;
	bool		any;			/* bm25_lists: a non-NULL share summed */
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

/* a receiver whose rows go to RECEIVE (the executor calls nothing else of it) */
static void
receiver_init(DestReceiver *pub, bool (*receive) (TupleTableSlot *, DestReceiver *))
{
	pub->receiveSlot = receive;
	pub->rStartup = receiver_startup;
	pub->rShutdown = receiver_shutdown;
	pub->rDestroy = receiver_destroy;
	pub->mydest = DestNone;
}

/* SPI connected, with *PLAN prepared (once a backend) and kept; WHO names the caller */
static void
spi_begin(SPIPlanPtr *plan, const char *sql, int nargs, Oid *types, const char *who)
{
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "%s: SPI_connect failed", who);
	if (*plan == NULL)
	{
		SPIPlanPtr	prepared = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);

		if (prepared == NULL)
			elog(ERROR, "%s: SPI_prepare failed: %s", who, SPI_result_code_string(SPI_result));
		if (SPI_keepplan(prepared) != 0)
			elog(ERROR, "%s: SPI_keepplan failed", who);
		*plan = prepared;
	}
}

/*
 * Postings read without the executor: bm25_postings_impact_idx (term_id, impact DESC)
 * INCLUDE (chunk_id, ...) scanned through the index AM with the keys term_id = id and
 * impact >= cut (int4eq, float48ge: the operators the SQL's index-only scan uses), each
 * entry's values taken from the index tuple, its visibility as nodeIndexonlyscan.c decides
 * it: an all-visible heap page (visibility map) counts as visible, otherwise the heap
 * tuple is fetched under the statement's snapshot and the entry skipped when none is
 * visible. A chunk holds one posting a term, so the order within a term changes no sum.
 */
typedef struct DirectScan
{
	Relation	heap;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	Buffer		vmbuffer;
} DirectScan;

/* the index attribute ATTNO (1-based) is NAME of type TYPID */
static bool
index_column_is(Relation index, int attno, const char *name, Oid typid)
{
	Form_pg_attribute att;

	if (attno > RelationGetDescr(index)->natts)
		return false;
	att = TupleDescAttr(RelationGetDescr(index), attno - 1);
	return strcmp(NameStr(att->attname), name) == 0 && att->atttypid == typid;
}

/* a table and index opened by open_btree but not read: their locks given back */
static void
close_btree(Relation heap, Relation index)
{
	relation_close(index, AccessShareLock);
	relation_close(heap, AccessShareLock);
}

/*
 * TABLE and its btree INDEX_NAME (in TABLE's schema) opened for a direct read, or false
 * (nothing held) where one does not apply: a serializable transaction (whose predicate
 * locks the executor takes), no active snapshot, either missing, not a plain table and a
 * valid btree index on it without expressions or a predicate. The caller checks the
 * columns it reads and gives both back with close_btree when they are not its own.
 */
static bool
open_btree(const char *table, const char *index_name, Relation *heap, Relation *index)
{
	Oid			heap_oid = RelnameGetRelid(table);
	Oid			index_oid;

	if (IsolationIsSerializable() || !ActiveSnapshotSet() || !OidIsValid(heap_oid))
		return false;
	index_oid = get_relname_relid(index_name, get_rel_namespace(heap_oid));
	if (!OidIsValid(index_oid))
		return false;
	*heap = relation_open(heap_oid, AccessShareLock);
	*index = relation_open(index_oid, AccessShareLock);	/* index_open if it is one */
	if ((*heap)->rd_rel->relkind == RELKIND_RELATION &&
		(*index)->rd_rel->relkind == RELKIND_INDEX && (*index)->rd_rel->relam == BTREE_AM_OID &&
		(*index)->rd_index->indrelid == heap_oid && (*index)->rd_index->indisvalid &&
		RelationGetIndexExpressions(*index) == NIL && RelationGetIndexPredicate(*index) == NIL)
		return true;
	close_btree(*heap, *index);
	return false;
}

/*
 * Open the index scan, or return false (nothing held) where the direct read does not
 * apply: no bm25_postings_impact_idx of the expected shape beside the bm25_postings the
 * search path names, or a serializable transaction (whose predicate locks the executor
 * takes); the caller reads through SPI then.
 */
static bool
direct_begin(DirectScan *d, int nkeys, bool lists)
{
	Relation	index;

	if (!open_btree("bm25_postings", "bm25_postings_impact_idx", &d->heap, &index))
		return false;
	if (index->rd_index->indnkeyatts != 2 ||
		!index_column_is(index, 1, "term_id", INT4OID) ||
		!index_column_is(index, 2, "impact", FLOAT4OID) ||
		!index_column_is(index, 3, "chunk_id", INT8OID) ||
		(lists && (!index_column_is(index, 4, "tf", INT2OID) ||
				   !index_column_is(index, 5, "len", INT4OID))))
	{
		close_btree(d->heap, index);
		return false;
	}
	d->index = index;
	d->scan = index_beginscan(d->heap, index, GetActiveSnapshot(), NULL, nkeys, 0);
	d->scan->xs_want_itup = true;
	d->slot = table_slot_create(d->heap, NULL);
	d->vmbuffer = InvalidBuffer;
	return true;
}

/*
 * The scan's next index tuple visible to the statement's snapshot, or NULL at its end:
 * an all-visible heap page (visibility map) counts as visible, otherwise the heap tuple
 * is fetched and the entry skipped when no version of it is visible.
 */
static IndexTuple
direct_next(DirectScan *d, const char *who)
{
	ItemPointer tid;

	while ((tid = index_getnext_tid(d->scan, ForwardScanDirection)) != NULL)
	{
		CHECK_FOR_INTERRUPTS();
		if (!VM_ALL_VISIBLE(d->heap, ItemPointerGetBlockNumber(tid), &d->vmbuffer))
		{
			if (!index_fetch_heap(d->scan, d->slot))
				continue;		/* no version visible to the snapshot */
			ExecClearTuple(d->slot);
			if (d->scan->xs_heap_continue)
				elog(ERROR, "%s: non-MVCC snapshot", who);
		}
		if (d->scan->xs_recheck)	/* btree never asks; nothing here could recheck */
			elog(ERROR, "%s: the index asks for a recheck", who);
		return d->scan->xs_itup;
	}
	return NULL;
}

/* one term's postings with impact >= cut into the receiver's sums */
static void
direct_read(DirectScan *d, Receiver *r, Datum id, Datum cut)
{
	ScanKeyData keys[2];
	IndexTuple	itup;

	ScanKeyEntryInitialize(&keys[0], 0, 1, BTEqualStrategyNumber, INT4OID, InvalidOid,
						   F_INT4EQ, id);
	ScanKeyEntryInitialize(&keys[1], 0, 2, BTGreaterEqualStrategyNumber, FLOAT8OID,
						   InvalidOid, F_FLOAT48GE, cut);
	index_rescan(d->scan, keys, 2, NULL, 0);
	while ((itup = direct_next(d, "ragstore_native.bm25_contenders")) != NULL)
	{
		bool		id_null,
					impact_null;
		Datum		chunk_id,
					impact;
		float8		g;
		ChunkEntry *e;
		bool		found;

		impact = index_getattr(itup, 2, d->scan->xs_itupdesc, &impact_null);
		chunk_id = index_getattr(itup, 3, d->scan->xs_itupdesc, &id_null);
		if (id_null || impact_null)
			continue;			/* NOT NULL columns */
		/* as receive_posting: q.wr * x.impact - q.cb, summed per chunk in term order */
		g = float8_mi(float8_mul(r->wr, (float8) DatumGetFloat4(impact)), r->cb);
		e = chunkhash_insert(r->chunks, DatumGetInt64(chunk_id), &found);
		e->sum = found ? float8_pl(e->sum, g) : g;
	}
}

static void
direct_end(DirectScan *d)
{
	if (d->vmbuffer != InvalidBuffer)
		ReleaseBuffer(d->vmbuffer);
	ExecDropSingleTupleTableSlot(d->slot);
	index_endscan(d->scan);
	index_close(d->index, NoLock);	/* locks held to the end of the transaction, as the executor holds them */
	table_close(d->heap, NoLock);
}

typedef struct Kept
{
	float8		bound;
	int64		chunk_id;
} Kept;

/* float8_cmp_internal, inlined: NaN above everything and equal to itself, -0 = 0 */
static inline int
float8_order(float8 a, float8 b)
{
	if (unlikely(isnan(a)))
		return isnan(b) ? 0 : 1;
	if (unlikely(isnan(b)))
		return -1;
	return (a > b) - (a < b);
}

/* ORDER BY bound DESC, chunk_id */
static int
kept_cmp(const void *a, const void *b)
{
	const Kept *x = (const Kept *) a;
	const Kept *y = (const Kept *) b;
	int			c = float8_order(y->bound, x->bound);

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
		DirectScan	scan;
		bool		direct;

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

		/* some thousands of chunks at 100k (11k for a typical SciFact claim): few grows */
		chunks = chunkhash_create(ctx, 8192, NULL);
		receiver = palloc0(sizeof(Receiver));
		receiver_init(&receiver->pub, receive_posting);
		receiver->chunks = chunks;

		direct = direct_begin(&scan, 2, false);
		if (!direct)
		{
			Oid			types[2] = {INT4OID, FLOAT8OID};

			spi_begin(&postings_plan, POSTINGS_SQL, 2, types,
					  "ragstore_native.bm25_contenders");
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
			if (direct)
			{
				direct_read(&scan, receiver, id, cut);
				continue;
			}

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
		if (direct)
			direct_end(&scan);
		else
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

/* ---- bm25_lists ---- */

/* one term's best postings by impact, as phase 1 reads them */
static const char *const LISTS_SQL =
"SELECT x.chunk_id, x.tf, x.len FROM bm25_postings x WHERE x.term_id = $1 "
"ORDER BY x.impact DESC LIMIT $2";

static SPIPlanPtr lists_plan = NULL;

/* phase 1's sums: each posting's exact share added to its chunk, terms in array order */
typedef struct ListsReceiver
{
	DestReceiver pub;
	chunkhash_hash *chunks;
	bool		share_null;		/* w, k1, b or avgdl NULL: every share NULL */
	float8		w;
	float8		k1;
	float8		k1_plus_1;		/* k1 + 1.0 */
	float8		one_minus_b;	/* 1.0 - b */
	float8		b;
	float8		avgdl;
	int64		taken;			/* rows of this term */
} ListsReceiver;

static void
lists_add(ListsReceiver *r, Datum chunk_id, Datum tf_datum, Datum len_datum)
{
	ChunkEntry *e;
	bool		found;

	r->taken++;
	e = chunkhash_insert(r->chunks, DatumGetInt64(chunk_id), &found);
	if (!found)
	{
		e->any = false;
		e->sum = 0;
	}
	if (!r->share_null)
	{
		float8		tf = (float8) DatumGetInt16(tf_datum);
		float8		len = (float8) DatumGetInt32(len_datum);

		/* l.w * l.tf * (k1 + 1.0) / (l.tf + k1 * (1.0 - b + b * l.len / avgdl)) */
		float8		g = float8_div(float8_mul(float8_mul(r->w, tf), r->k1_plus_1),
								   float8_pl(tf, float8_mul(r->k1,
															float8_pl(r->one_minus_b,
																	  float8_div(float8_mul(r->b, len),
																				 r->avgdl)))));

		/* sum(float8): the first non-NULL value, then float8pl in input order */
		e->sum = e->any ? float8_pl(e->sum, g) : g;
		e->any = true;
	}
}

static bool
receive_list_row(TupleTableSlot *slot, DestReceiver *self)
{
	bool		id_null,
				tf_null,
				len_null;
	Datum		id = slot_getattr(slot, 1, &id_null);
	Datum		tf = slot_getattr(slot, 2, &tf_null);
	Datum		len = slot_getattr(slot, 3, &len_null);

	if (!id_null && !tf_null && !len_null)	/* NOT NULL columns */
		lists_add((ListsReceiver *) self, id, tf, len);
	return true;
}

/* one term's first LIMIT visible postings (impact DESC, the index's order), or all (-1) */
static void
direct_list(DirectScan *d, ListsReceiver *r, Datum id, int64 limit)
{
	ScanKeyData key;
	IndexTuple	itup;

	ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, INT4OID, InvalidOid,
						   F_INT4EQ, id);
	index_rescan(d->scan, &key, 1, NULL, 0);
	while ((limit < 0 || r->taken < limit) &&
		   (itup = direct_next(d, "ragstore_native.bm25_lists")) != NULL)
	{
		bool		id_null,
					tf_null,
					len_null;
		Datum		chunk_id,
					tf,
					len;

		chunk_id = index_getattr(itup, 3, d->scan->xs_itupdesc, &id_null);
		tf = index_getattr(itup, 4, d->scan->xs_itupdesc, &tf_null);
		len = index_getattr(itup, 5, d->scan->xs_itupdesc, &len_null);
		if (id_null || tf_null || len_null)
			continue;			/* NOT NULL columns */
		lists_add(r, chunk_id, tf, len);
	}
}

typedef struct Known
{
	float8		known;
	bool		null;
	int64		chunk_id;
} Known;

/* ORDER BY known DESC (NULLS FIRST), chunk_id */
static int
known_cmp(const void *a, const void *b)
{
	const Known *x = (const Known *) a;
	const Known *y = (const Known *) b;
	int			c;

	if (x->null != y->null)
		return x->null ? -1 : 1;
	c = x->null ? 0 : float8_order(y->known, x->known);
	if (c != 0)
		return c;
	return (x->chunk_id > y->chunk_id) - (x->chunk_id < y->chunk_id);
}

PG_FUNCTION_INFO_V1(ragstore_bm25_lists);

/*
 * bm25_lists(ids int4[], ws float8[], n int4, k1 float8, b float8, avgdl float8,
 *            OUT cand int8[], OUT all_read bool)
 *
 * Revision 0024's ragstore_bm25_lists: each term's (array order) n best postings by
 * impact, each posting's exact share w * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len /
 * avgdl)) summed per chunk in that order; cand the chunks by sum DESC then chunk_id (NULL
 * when none), all_read whether every term (grouped by id) has fewer than n rows.
 */
Datum
ragstore_bm25_lists(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		result[2] = {0, 0};
	bool		result_null[2] = {true, true};
	MemoryContext ctx = CurrentMemoryContext;
	Datum	   *ids = NULL,
			   *ws = NULL;
	bool	   *ids_null = NULL,
			   *ws_null = NULL;
	int			n_ids = 0,
				n_ws = 0,
				n_terms,
				i,
				j;
	bool		limit_null = PG_ARGISNULL(2);
	int64		limit = limit_null ? -1 : (int64) PG_GETARG_INT32(2);
	int64	   *taken;
	ListsReceiver *receiver;
	chunkhash_hash *chunks;
	DirectScan	scan;
	bool		direct = false;
	bool		spi = false;
	bool		have_done = false;
	bool		all_done = true;

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "ragstore_native.bm25_lists must return a record");
	tupdesc = BlessTupleDesc(tupdesc);

	/* unnest(NULL, ...) pads with NULLs as for an empty array */
	if (!PG_ARGISNULL(0))
		deconstruct_array_builtin(PG_GETARG_ARRAYTYPE_P(0), INT4OID, &ids, &ids_null, &n_ids);
	if (!PG_ARGISNULL(1))
		deconstruct_array_builtin(PG_GETARG_ARRAYTYPE_P(1), FLOAT8OID, &ws, &ws_null, &n_ws);
	n_terms = Max(n_ids, n_ws);
	taken = palloc0(sizeof(int64) * Max(n_terms, 1));

	chunks = chunkhash_create(ctx, 1024, NULL);
	receiver = palloc0(sizeof(ListsReceiver));
	receiver_init(&receiver->pub, receive_list_row);
	receiver->chunks = chunks;
	if (PG_ARGISNULL(3) || PG_ARGISNULL(4) || PG_ARGISNULL(5))
		receiver->share_null = true;
	else
	{
		receiver->k1 = PG_GETARG_FLOAT8(3);
		receiver->b = PG_GETARG_FLOAT8(4);
		receiver->avgdl = PG_GETARG_FLOAT8(5);
		receiver->k1_plus_1 = float8_pl(receiver->k1, 1.0);
		receiver->one_minus_b = float8_mi(1.0, receiver->b);
	}

	for (i = 0; i < n_terms; i++)
	{
		Datum		id,
					w;
		bool		w_null;

		if (!limit_null && limit < 0)	/* the Limit node of each term's read */
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_ROW_COUNT_IN_LIMIT_CLAUSE),
					 errmsg("LIMIT must not be negative")));
		if (!element(ids, ids_null, n_ids, i, &id))
			continue;			/* x.term_id = NULL: no posting */
		if (limit == 0)
			continue;			/* LIMIT 0 */
		w_null = !element(ws, ws_null, n_ws, i, &w);
		receiver->share_null = w_null || PG_ARGISNULL(3) || PG_ARGISNULL(4) ||
			PG_ARGISNULL(5);
		receiver->w = w_null ? 0 : DatumGetFloat8(w);
		receiver->taken = 0;
		if (!direct && !spi)
		{
			direct = direct_begin(&scan, 1, true);
			if (!direct)
			{
				Oid			types[2] = {INT4OID, INT8OID};

				spi_begin(&lists_plan, LISTS_SQL, 2, types, "ragstore_native.bm25_lists");
				spi = true;
			}
		}
		if (direct)
			direct_list(&scan, receiver, id, limit);
		else
		{
			ParamListInfo params = makeParamList(2);
			SPIExecuteOptions options;
			int			rc;

			params->params[0].value = id;
			params->params[0].isnull = false;
			params->params[0].pflags = PARAM_FLAG_CONST;
			params->params[0].ptype = INT4OID;
			params->params[1].value = Int64GetDatum(limit);
			params->params[1].isnull = limit_null;
			params->params[1].pflags = PARAM_FLAG_CONST;
			params->params[1].ptype = INT8OID;
			memset(&options, 0, sizeof(options));
			options.params = params;
			options.read_only = true;
			options.dest = (DestReceiver *) receiver;
			rc = SPI_execute_plan_extended(lists_plan, &options);
			if (rc != SPI_OK_SELECT && rc != SPI_OK_UTILITY)
				elog(ERROR, "ragstore_native.bm25_lists: reading postings failed: %s",
					 SPI_result_code_string(rc));
		}
		taken[i] = receiver->taken;
	}
	if (direct)
		direct_end(&scan);
	if (spi)
		SPI_finish();

	/*
	 * cnt: q LEFT JOIN lists ON l.term_id = q.term_id GROUP BY q.term_id, count(chunk_id) <
	 * n, and bool_and over the groups. A term named d times has d rows in q, each joined
	 * to the d reads of its postings: d * (their sum) rows. The NULL ids are one group that
	 * joins nothing (count 0).
	 */
	for (i = 0; i < n_terms; i++)
	{
		int64		count = 0;
		int			d = 0;
		bool		first = true;
		Datum		id;

		if (!element(ids, ids_null, n_ids, i, &id))
		{
			for (j = 0; j < i; j++)
				if (!element(ids, ids_null, n_ids, j, &id))
					first = false;
		}
		else
		{
			for (j = 0; j < n_terms; j++)
			{
				Datum		other;

				if (!element(ids, ids_null, n_ids, j, &other) ||
					DatumGetInt32(other) != DatumGetInt32(id))
					continue;
				if (j < i)
					first = false;
				d++;
				count += taken[j];
			}
			count *= d;
		}
		if (!first || limit_null)
			continue;			/* a group counted once; count < NULL is NULL */
		have_done = true;
		if (!(count < limit))
			all_done = false;
	}
	if (have_done)
	{
		result[1] = BoolGetDatum(all_done);
		result_null[1] = false;
	}

	if (chunks->members > 0)
	{
		Known	   *known = MemoryContextAlloc(ctx, sizeof(Known) * chunks->members);
		Datum	   *out = palloc(sizeof(Datum) * chunks->members);
		int			n_known = 0;
		chunkhash_iterator it;
		ChunkEntry *e;

		chunkhash_start_iterate(chunks, &it);
		while ((e = chunkhash_iterate(chunks, &it)) != NULL)
		{
			known[n_known].known = e->sum;
			known[n_known].null = !e->any;
			known[n_known].chunk_id = e->chunk_id;
			n_known++;
		}
		qsort(known, n_known, sizeof(Known), known_cmp);
		for (i = 0; i < n_known; i++)
			out[i] = Int64GetDatum(known[i].chunk_id);
		result[0] = PointerGetDatum(construct_array(out, n_known, INT8OID, sizeof(int64),
													FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
		result_null[0] = false;
	}
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, result, result_null)));
}

/* ---- bm25_score ---- */

static const char *const CHUNKS_SQL =
"SELECT c.id, c.tsv, c.tsv_length FROM chunks c WHERE c.id = ANY($1)";

static SPIPlanPtr chunks_plan = NULL;

typedef struct QueryTerm
{
	char	   *lexeme;
	int			len;
	float8		w;
} QueryTerm;

typedef struct ScoreReceiver
{
	DestReceiver pub;
	QueryTerm  *terms;			/* in C collation order */
	int			n_terms;
	float8		k1;
	float8		k1_plus_1;		/* k1 + 1.0 */
	float8		one_minus_b;	/* 1.0 - b */
	float8		b;
	float8		avgdl;
	Tuplestorestate *out;
	TupleDesc	out_desc;
} ScoreReceiver;

/* ORDER BY lexeme COLLATE "C": bytes, then the shorter first (tsCompareString's order) */
static int
lexeme_cmp(const char *a, int lena, const char *b, int lenb)
{
	int			c = memcmp(a, b, Min(lena, lenb));

	if (c != 0)
		return c;
	return (lena > lenb) - (lena < lenb);
}

static int
term_cmp(const void *x, const void *y)
{
	const QueryTerm *a = (const QueryTerm *) x;
	const QueryTerm *b = (const QueryTerm *) y;

	return lexeme_cmp(a->lexeme, a->len, b->lexeme, b->len);
}

/* the entry of LEXEME in a tsvector (entries sorted by tsCompareString), or NULL */
static WordEntry *
find_lexeme(TSVector tsv, const char *lexeme, int len)
{
	WordEntry  *entries = ARRPTR(tsv);
	char	   *strs = STRPTR(tsv);
	int			lo = 0,
				hi = tsv->size - 1;

	while (lo <= hi)
	{
		int			mid = lo + (hi - lo) / 2;
		int			c = lexeme_cmp(strs + entries[mid].pos, entries[mid].len, lexeme, len);

		if (c == 0)
			return &entries[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid - 1;
	}
	return NULL;
}

/* one chunk's score into the result (no row when it holds none of the query's lexemes) */
static void
score_chunk(ScoreReceiver *r, Datum id, Datum tsv_datum, Datum len_datum)
{
	TSVector	tsv = DatumGetTSVector(tsv_datum);
	float8		sum = 0;
	bool		any = false;
	int			i;

	for (i = 0; i < r->n_terms; i++)
	{
		WordEntry  *e = find_lexeme(tsv, r->terms[i].lexeme, r->terms[i].len);
		float8		tf;
		float8		part;

		/* ts_filter(setweight(tsv, 'A', lexs), '{a}') keeps lexemes with positions */
		if (e == NULL || !e->haspos || POSDATALEN(tsv, e) == 0)
			continue;
		tf = (float8) POSDATALEN(tsv, e);
		/* qt.w * u.tf * (k1 + 1.0) / (u.tf + k1 * (1.0 - b + b * c.tsv_length / avgdl)) */
		part = float8_div(float8_mul(float8_mul(r->terms[i].w, tf), r->k1_plus_1),
						  float8_pl(tf, float8_mul(r->k1,
												   float8_pl(r->one_minus_b,
															 float8_div(float8_mul(r->b,
																				   (float8) DatumGetInt32(len_datum)),
																		r->avgdl)))));
		/* sum(...) ORDER BY lexeme COLLATE "C": the first value, then float8pl */
		sum = any ? float8_pl(sum, part) : part;
		any = true;
	}
	if (any)
	{
		Datum		values[2] = {id, Float8GetDatum(sum)};
		bool		nulls[2] = {false, false};

		tuplestore_putvalues(r->out, r->out_desc, values, nulls);
	}
	if ((Pointer) tsv != DatumGetPointer(tsv_datum))
		pfree(tsv);
}

static bool
receive_chunk(TupleTableSlot *slot, DestReceiver *self)
{
	bool		id_null,
				tsv_null,
				len_null;
	Datum		id = slot_getattr(slot, 1, &id_null);
	Datum		tsv_datum = slot_getattr(slot, 2, &tsv_null);
	Datum		len_datum = slot_getattr(slot, 3, &len_null);

	/* no lexemes (a NULL tsvector), or a NULL length: no row */
	if (!id_null && !tsv_null && !len_null)
		score_chunk((ScoreReceiver *) self, id, tsv_datum, len_datum);
	return true;
}

/*
 * Chunks read without the executor: chunks_pkey (id) scanned through the index AM, one
 * probe an id (the ids sorted, without duplicates or NULLs, as = ANY's index scan takes
 * them), the heap tuple visible to the statement's snapshot fetched and its id, tsv and
 * tsv_length scored; SPI where this does not apply (as for the postings).
 */
typedef struct ChunkScan
{
	Relation	heap;
	Relation	index;
	IndexScanDesc scan;
	TupleTableSlot *slot;
	AttrNumber	id_att;
	AttrNumber	tsv_att;
	AttrNumber	len_att;
} ChunkScan;

/* the attribute number of the heap column NAME of type TYPID, or InvalidAttrNumber */
static AttrNumber
heap_column(Relation heap, const char *name, Oid typid)
{
	TupleDesc	desc = RelationGetDescr(heap);
	int			i;

	for (i = 0; i < desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
			return att->atttypid == typid ? att->attnum : InvalidAttrNumber;
	}
	return InvalidAttrNumber;
}

static bool
chunks_begin(ChunkScan *d)
{
	Relation	index;

	if (!open_btree("chunks", "chunks_pkey", &d->heap, &index))
		return false;
	d->id_att = heap_column(d->heap, "id", INT8OID);
	d->tsv_att = heap_column(d->heap, "tsv", TSVECTOROID);
	d->len_att = heap_column(d->heap, "tsv_length", INT4OID);
	if (d->id_att == InvalidAttrNumber || d->tsv_att == InvalidAttrNumber ||
		d->len_att == InvalidAttrNumber ||
		index->rd_index->indnatts != 1 || index->rd_index->indkey.values[0] != d->id_att ||
		!index_column_is(index, 1, "id", INT8OID))
	{
		close_btree(d->heap, index);
		return false;
	}
	d->index = index;
	d->scan = index_beginscan(d->heap, index, GetActiveSnapshot(), NULL, 1, 0);
	d->slot = table_slot_create(d->heap, NULL);
	return true;
}

/* score the chunks of IDS (an int8[]) through the open scan */
static void
chunks_score(ChunkScan *d, ScoreReceiver *r, ArrayType *ids)
{
	Datum	   *values;
	bool	   *nulls;
	int64	   *sorted;
	int			n,
				m = 0,
				i;

	deconstruct_array(ids, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &values,
					  &nulls, &n);
	sorted = palloc(sizeof(int64) * Max(n, 1));
	for (i = 0; i < n; i++)
		if (!nulls[i])			/* id = NULL matches nothing */
			sorted[m++] = DatumGetInt64(values[i]);
	qsort(sorted, m, sizeof(int64), int64_cmp);
	for (i = 0; i < m; i++)
	{
		ScanKeyData key;

		if (i > 0 && sorted[i] == sorted[i - 1])
			continue;			/* one row a chunk, however often ids names it */
		CHECK_FOR_INTERRUPTS();
		ScanKeyEntryInitialize(&key, 0, 1, BTEqualStrategyNumber, INT8OID, InvalidOid,
							   F_INT8EQ, Int64GetDatum(sorted[i]));
		index_rescan(d->scan, &key, 1, NULL, 0);
		while (index_getnext_slot(d->scan, ForwardScanDirection, d->slot))
		{
			bool		id_null,
						tsv_null,
						len_null;
			Datum		id = slot_getattr(d->slot, d->id_att, &id_null);
			Datum		tsv_datum = slot_getattr(d->slot, d->tsv_att, &tsv_null);
			Datum		len_datum = slot_getattr(d->slot, d->len_att, &len_null);

			if (!id_null && !tsv_null && !len_null)
				score_chunk(r, id, tsv_datum, len_datum);
		}
	}
	pfree(sorted);
}

static void
chunks_end(ChunkScan *d)
{
	ExecDropSingleTupleTableSlot(d->slot);
	index_endscan(d->scan);
	index_close(d->index, NoLock);	/* locks held to the end of the transaction, as the executor holds them */
	table_close(d->heap, NoLock);
}

PG_FUNCTION_INFO_V1(ragstore_bm25_score);

/*
 * bm25_score(ids int8[], lexs text[], ws float8[], k1 float8, b float8, avgdl float8)
 *     RETURNS TABLE (chunk_id int8, raw float8), STRICT (ragstore_bm25_topk passes no NULL)
 */
Datum
ragstore_bm25_score(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *lex_values,
			   *w_values;
	bool	   *lex_nulls,
			   *w_nulls;
	int			n_lexs,
				n_ws,
				n,
				i;
	ScoreReceiver *receiver;
	ParamListInfo params;
	SPIExecuteOptions options;
	int			rc;
	ChunkScan	scan;

	InitMaterializedSRF(fcinfo, 0);
	deconstruct_array_builtin(PG_GETARG_ARRAYTYPE_P(1), TEXTOID, &lex_values, &lex_nulls,
							  &n_lexs);
	deconstruct_array_builtin(PG_GETARG_ARRAYTYPE_P(2), FLOAT8OID, &w_values, &w_nulls, &n_ws);

	receiver = palloc0(sizeof(ScoreReceiver));
	receiver_init(&receiver->pub, receive_chunk);
	receiver->terms = palloc(sizeof(QueryTerm) * Max(n_lexs, 1));
	/* unnest(lexs, ws): a lexeme without its weight (or a NULL one) adds NULL, which sum()
	 * skips; setweight refuses a NULL lexeme */
	n = 0;
	for (i = 0; i < n_lexs; i++)
	{
		if (lex_nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("lexeme array may not contain nulls")));
		if (i >= n_ws || w_nulls[i])
			continue;
		receiver->terms[n].lexeme = VARDATA_ANY(DatumGetPointer(lex_values[i]));
		receiver->terms[n].len = VARSIZE_ANY_EXHDR(DatumGetPointer(lex_values[i]));
		receiver->terms[n].w = DatumGetFloat8(w_values[i]);
		n++;
	}
	/* a stable sort is not needed: the query's lexemes are distinct (a tsvector's) */
	qsort(receiver->terms, n, sizeof(QueryTerm), term_cmp);
	receiver->n_terms = n;
	receiver->k1 = PG_GETARG_FLOAT8(3);
	receiver->b = PG_GETARG_FLOAT8(4);
	receiver->avgdl = PG_GETARG_FLOAT8(5);
	receiver->k1_plus_1 = float8_pl(receiver->k1, 1.0);
	receiver->one_minus_b = float8_mi(1.0, receiver->b);
	receiver->out = rsinfo->setResult;
	receiver->out_desc = rsinfo->setDesc;
	if (n == 0)
		return (Datum) 0;

	if (chunks_begin(&scan))
	{
		chunks_score(&scan, receiver, PG_GETARG_ARRAYTYPE_P(0));
		chunks_end(&scan);
		return (Datum) 0;
	}
	{
		Oid			types[1] = {INT8ARRAYOID};

		spi_begin(&chunks_plan, CHUNKS_SQL, 1, types, "ragstore_native.bm25_score");
	}
	params = makeParamList(1);
	params->params[0].value = PG_GETARG_DATUM(0);
	params->params[0].isnull = false;
	params->params[0].pflags = PARAM_FLAG_CONST;
	params->params[0].ptype = INT8ARRAYOID;
	memset(&options, 0, sizeof(options));
	options.params = params;
	options.read_only = true;
	options.dest = (DestReceiver *) receiver;
	rc = SPI_execute_plan_extended(chunks_plan, &options);
	if (rc != SPI_OK_SELECT && rc != SPI_OK_UTILITY)
		elog(ERROR, "ragstore_native.bm25_score: reading chunks failed: %s",
			 SPI_result_code_string(rc));
	SPI_finish();
	return (Datum) 0;
}
