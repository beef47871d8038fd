"""Removing a pin nothing uses: ``ragstore models remove NAME@REVISION``.

A pin never changes under its users, and used to be kept for good: a pin of an endpoint
made before ``models add`` refused ``user:password@`` in its URL kept that password in the
database (and in every backup after) even once each collection had moved to a pin of the
same endpoint without it (``db check`` warned of it for ever), and pins of experiments
piled up. One no collection uses in any way can now be deleted.

"Uses" is every embedding space that names the pin: a collection's active model, a space
or chunk set kept for a rollback (``models prune`` drops them), a migration to it in
progress (``models cancel`` drops it). Ingest, queued jobs included, embeds with its
collection's active model and the spaces being built, so a pin with no space is one no job
will embed with. The removal holds the pin's row against a space being created for it
(:func:`ragstore.db.models.lock_pin`); a migration holds it while it creates its space
(:func:`ragstore.db.models.hold_pin`), so the two cannot cross.
"""

from __future__ import annotations

from ragstore.db import models
from ragstore.db.errors import translated
from ragstore.db.models import PinnedModel, PinUse
from ragstore.embedding.registry import builtin_specs
from ragstore.errors import ConflictError, ModelNotFoundError, RagstoreError
from ragstore.modelops.specs import find_model
from ragstore.runtime import Runtime


def remove_model(rt: Runtime, ref: str, *, dry_run: bool = False) -> PinnedModel:
    """Delete the pin ``ref`` names (``NAME@REVISION``, or ``NAME`` of one revision) in one
    transaction, refusing (ConflictError, nothing changed) one that any collection uses or
    that is this configuration's default model and not built in. ``dry_run``: the same
    checks, nothing deleted. Returns the pin as it was."""
    pinned = find_model(rt, ref, pin_builtin=False)
    key = pinned.spec.key
    _refuse_default(rt, pinned)
    with rt.db.connection() as conn, translated(f"removing model {key}"):
        if not models.lock_pin(conn, pinned.id):
            raise ModelNotFoundError(
                f"model {key} was removed meanwhile (another `ragstore models remove`); "
                "nothing left to remove"
            )
        uses = models.pin_uses(conn, pinned.id)
        if uses:
            raise ConflictError(in_use(key, uses))
        if not dry_run:
            models.delete_pin(conn, pinned.id)
    return pinned


def in_use(key: str, uses: list[PinUse]) -> str:
    """The refusal of a pin in use: each use, and the command that ends it."""
    said: list[str] = []
    for use in uses:
        name = use.collection
        if use.status == "building":
            what = (
                f"collection {name!r} is being migrated to it (finish with `ragstore models "
                f"migrate -c {name} --to {key}`, or `ragstore models cancel -c {name}`)"
            )
        elif use.status == "active" and not use.own_chunks:
            what = (
                f"it is the active model of collection {name!r} (move it with `ragstore "
                f"models migrate -c {name} --to MODEL`, then `ragstore models prune -c {name}`)"
            )
        else:
            kept = "its own chunk set and vectors" if use.own_chunks else "its vectors"
            what = (
                f"collection {name!r} keeps {kept} for a rollback (`ragstore models prune "
                f"-c {name}` drops them; no rollback to it after)"
            )
        if what not in said:
            said.append(what)
    return f"model {key} is in use, nothing was removed: " + "; ".join(said)


def _refuse_default(rt: Runtime, pinned: PinnedModel) -> None:
    """Refuse the pin this configuration's default model (``RAGSTORE_MODEL``, ``model``
    in the config) resolves to, unless it is a built-in's own pin: that one is pinned
    again, the same, the first time a new collection needs it, where any other would leave
    ``collections create`` and every ingest into a new collection failing with
    ``model_not_found``. (A server configured otherwise is not seen from here.)"""
    spec = pinned.spec
    builtin = builtin_specs().get(spec.name)
    if builtin is not None and builtin.revision == spec.revision:
        return
    default = rt.settings.model
    try:
        resolved = find_model(rt, default, pin_builtin=False)
    except RagstoreError:  # a built-in not pinned yet, or a name of several revisions
        return
    if resolved.id == pinned.id:
        raise ConflictError(
            f"model {spec.key} is the default model of new collections here "
            f"(RAGSTORE_MODEL or `model` in the config: {default!r}) and is not built in: "
            "removed, `ragstore collections create` and ingest into a new collection would "
            "fail; set another default model first; nothing was removed"
        )


def hold_target(conn: models.Conn, model_id: int, key: str, collection: str) -> None:
    """Hold the pin a migration of ``collection`` is about to create (or reuse) a space
    for, until its transaction ends, so that no removal runs meanwhile; refuse
    (ModelNotFoundError, nothing changed) one removed since the migration looked it up,
    which would otherwise fail on the foreign key as "something removed meanwhile"."""
    if not models.hold_pin(conn, model_id):
        raise ModelNotFoundError(
            f"model {key} was removed (`ragstore models remove`) after this migration of "
            f"{collection!r} looked it up; nothing was changed: pin it again with `ragstore "
            "models add` to migrate to it"
        )
