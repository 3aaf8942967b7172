"""Console: the tracking config — form, live preview, revision history and rollback."""

from __future__ import annotations

from flask import Blueprint, flash, request

from blueprints.console.base import (
    actor,
    back_to,
    get_db,
    is_htmx,
    on_domain_error,
    render,
    runtime,
)
from tally.end_users.directory import count_end_users
from tally.tracking.config import DIALECTS, FIELDS, HASH_MODES, ConfigFieldError, TrackingConfig
from tally.tracking.revisions import history, preview, rollback_config
from tally.tracking.store import active_config, save_config

PAGE, PANEL, PREVIEW = "config/page.html", "config/_panel.html", "config/_preview.html"
DEFAULT_PREVIEW_ID = "user_123"
MAX_PREVIEW_ID = 255


def register(bp: Blueprint) -> None:
    """The tracking config's routes on the console blueprint ``bp``."""
    bp.get("/config")(config_page)
    bp.get("/config/preview")(config_preview)
    bp.post("/config")(config_save)
    bp.post("/config/revisions/<int:revision_id>/rollback")(config_rollback)


def _typed_fields(source) -> dict[str, str]:
    return {name: source[name] for name in FIELDS if name in source}


def _preview_id(source) -> str:
    return (source.get("preview_id") or "").strip()[:MAX_PREVIEW_ID] or DEFAULT_PREVIEW_ID


def _panel_context(
    current: TrackingConfig, values: dict[str, str], preview_id: str, **extra
) -> dict:
    """What the config panel shows: the form as typed, both previews, the history."""
    try:
        edited, field_error = current.with_fields(values), None
    except ConfigFieldError as exc:
        edited, field_error = None, exc
    key = runtime().hash_key
    users = count_end_users(get_db())  # the collision warning is reckoned for them
    return {
        "values": {**current.as_fields(), **values},
        "current": current,
        "preview_id": preview_id,
        "current_preview": preview(current, preview_id, key),
        "edited_preview": preview(edited, preview_id, key, users) if edited else None,
        "preview_error": str(field_error) if field_error else None,
        "history": history(get_db()),
        "hash_modes": HASH_MODES,
        "dialects": DIALECTS,
        **extra,
    }


def config_page():
    """The active config as a form, with the preview and the revision history."""
    current = active_config(get_db(), runtime().cache)
    return render(PAGE, PANEL, **_panel_context(current, {}, _preview_id(request.args)))


def config_preview():
    """The identifier an internal id would get under the current and the edited config."""
    current = active_config(get_db(), runtime().cache)
    context = _panel_context(current, _typed_fields(request.args), _preview_id(request.args))
    if not is_htmx():
        return render(PAGE, **context)
    return render(PREVIEW, **context)


def _form_again() -> dict:
    form = request.form
    return _panel_context(
        active_config(get_db(), runtime().cache), _typed_fields(form), _preview_id(form)
    )


@on_domain_error(PAGE, PANEL, _form_again)
def config_save():
    """Save the edited config as a new revision (nothing is saved when nothing changed)."""
    db = get_db()
    current = active_config(db, runtime().cache)
    preview_id = _preview_id(request.form)
    edited = current.with_fields(_typed_fields(request.form))
    if edited.as_fields() == current.as_fields():
        message = "Nothing changed: no new revision was saved."
    else:
        comment = (request.form.get("comment") or "").strip()[:500] or None
        revision = save_config(db, edited, actor(), comment)
        message = f"Saved revision {revision.id}."
    if not is_htmx():
        flash(message)
        return back_to("console.config_page")
    current = active_config(db, runtime().cache)
    return render(PAGE, PANEL, **_panel_context(current, {}, preview_id, message=message))


@on_domain_error(
    PAGE,
    PANEL,
    lambda: _panel_context(active_config(get_db(), runtime().cache), {}, DEFAULT_PREVIEW_ID),
)
def config_rollback(revision_id: int):
    """Make an earlier revision's config active again, as a new revision."""
    db = get_db()
    revision = rollback_config(db, revision_id, actor())
    message = f"Rolled back to revision {revision_id}: saved as revision {revision.id}."
    if not is_htmx():
        flash(message)
        return back_to("console.config_page")
    current = active_config(db, runtime().cache)
    return render(PAGE, PANEL, **_panel_context(current, {}, DEFAULT_PREVIEW_ID, message=message))
