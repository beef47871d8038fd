"""A BM25 rewrite drops the postings' indexes only in a store that had no postings at all.

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-05

``ragstore_bm25_write_postings`` (revision 0013) dropped ``bm25_postings``' two indexes
before its insert, and built them after it, when it found the table empty. It looked
after its callers had deleted the collection's old postings, so a rewrite of the only
collection that has any (``ragstore_bm25_rebuild``, as after a change of the collection's
k1 or b) found the table empty too: its ``DROP INDEX`` then held every search's BM25
list, in every collection, until the rewrite committed. A store whose
postings table was empty before the rewrite (a first load into a new store) still builds
the indexes once; any other rewrite writes through them, and searches go on meanwhile.

The callers now look before they delete and say so: ``ragstore_bm25_write_postings(cid,
alone)``. The postings, impacts, floors and counts written are those of revision 0013.
The downgrade restores revision 0013's three functions.
"""

from types import ModuleType

from alembic import op

from ragstore.db.revisions import earlier_revision

revision = "0029"
down_revision = "0028"
branch_labels = None
depends_on = None


def _revision_0013() -> ModuleType:
    """Revision 0013's module: its function bodies, which this one changes in three places."""
    return earlier_revision("0013_bm25_build_direct.py")


def _replaced(text: str, old: str, new: str) -> str:
    """``text`` with ``old`` (present exactly once) replaced: a changed revision 0013 fails
    here rather than yielding a function that differs unnoticed."""
    if text.count(old) != 1:
        raise RuntimeError(f"revision 0029: expected one {old!r} in revision 0013's function")
    return text.replace(old, new)


def _functions() -> tuple[str, str, str]:
    prev = _revision_0013()
    write = _replaced(
        prev.WRITE_POSTINGS,
        "ragstore_bm25_write_postings(cid integer) RETURNS bigint",
        "ragstore_bm25_write_postings(cid integer, alone boolean) RETURNS bigint",
    )
    write = _replaced(write, "        alone boolean;\n", "")
    write = _replaced(write, "        alone := NOT EXISTS (SELECT 1 FROM bm25_postings);\n", "")
    rebuild = _replaced(
        prev.REBUILD,
        "        LANGUAGE plpgsql AS $$\n    BEGIN\n",
        "        LANGUAGE plpgsql AS $$\n    DECLARE\n        alone boolean;\n    BEGIN\n"
        "        alone := NOT EXISTS (SELECT 1 FROM bm25_postings);\n",
    )
    rebuild = _replaced(
        rebuild,
        "RETURN ragstore_bm25_write_postings(cid);",
        "RETURN ragstore_bm25_write_postings(cid, alone);",
    )
    finish = _replaced(
        prev.BULK_FINISH,
        "        keep integer;\n    BEGIN\n",
        "        keep integer;\n        alone boolean;\n    BEGIN\n"
        "        alone := NOT EXISTS (SELECT 1 FROM bm25_postings);\n",
    )
    finish = _replaced(
        finish,
        "RETURN ragstore_bm25_write_postings(cid);",
        "RETURN ragstore_bm25_write_postings(cid, alone);",
    )
    return write, rebuild, finish


def upgrade() -> None:
    write, rebuild, finish = _functions()
    op.execute("DROP FUNCTION ragstore_bm25_write_postings(integer)")
    op.execute(write)
    op.execute(rebuild)
    op.execute(finish)


def downgrade() -> None:
    prev = _revision_0013()
    op.execute("DROP FUNCTION ragstore_bm25_write_postings(integer, boolean)")
    op.execute(prev.WRITE_POSTINGS)
    op.execute(prev.REBUILD)
    op.execute(prev.BULK_FINISH)
