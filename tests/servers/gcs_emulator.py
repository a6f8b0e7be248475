"""gcp-storage-emulator, made to honour generation preconditions as Cloud Storage does.

gcp-storage-emulator (2026.7.19) ignores ``ifGenerationMatch`` and its kin: an upload with
``ifGenerationMatch=0`` overwrites an existing object, where Cloud Storage answers ``412
conditionNotMet`` and leaves the object alone. resutil relies on that answer (exclusive
create; a rename that leaves alone a source replaced meanwhile), so the tests wrap the
emulator's handlers with the check Cloud Storage makes before acting:

- uploads (one request, or the chunk requests of a resumable session, whose URL carries
  the conditions given when the session was started), deletes and the destination of a
  rewrite: ``ifGenerationMatch=N`` (the live object's generation must be N; 0: there must
  be no live object) and ``ifGenerationNotMatch=N``;
- the source of a rewrite: ``ifSourceGenerationMatch`` / ``ifSourceGenerationNotMatch``.

Only requests that pass a condition are affected. The emulator serves one request at a time
(``http.server.HTTPServer``), so a check and the change it guards cannot interleave with
another request, just as Cloud Storage checks and writes in one step. Nothing of resutil is
changed: this patches the test server only, in the process that starts it.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Callable, Iterator

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

CONDITION_NOT_MET = "At least one of the pre-conditions you specified did not hold."
Target = tuple[str, str | None, str | None]  # (condition prefix, bucket, object name)


def _generation(storage: Any, bucket: str | None, name: str | None) -> int:
    """The live object's generation; 0 when there is none."""
    try:
        return int(storage.get_file_obj(bucket, name)["generation"])
    except (NotFound, KeyError, TypeError, ValueError):
        return 0


def _upload_target(request: Any, storage: Any) -> Iterator[Target]:
    if (request.query.get("uploadType") or [""])[0] == "resumable" \
            and "upload_id" not in request.query:
        return  # starting a session stores nothing; its chunks carry the conditions
    name = (request.query.get("name") or [None])[0]
    upload_id = (request.query.get("upload_id") or [None])[0]
    if name is None and upload_id is not None:  # a resumable chunk: the session names it
        try:
            name = storage.get_resumable_file_obj(upload_id)["name"]
        except (NotFound, KeyError, TypeError):
            return  # no such session: the handler answers that
    if name is None and isinstance(request.data, dict):  # multipart: the metadata part
        name = (request.data.get("meta") or {}).get("name")
    yield "ifGeneration", request.params.get("bucket_name"), name


def _delete_target(request: Any, storage: Any) -> Iterator[Target]:
    yield "ifGeneration", request.params.get("bucket_name"), request.params.get("object_id")


def _rewrite_targets(request: Any, storage: Any) -> Iterator[Target]:
    params = request.params
    yield "ifGeneration", params.get("dest_bucket_name"), params.get("dest_object_id")
    yield "ifSourceGeneration", params.get("bucket_name"), params.get("object_id")


def _condition_fails(request: Any, storage: Any, targets: Iterator[Target]) -> bool:
    for prefix, bucket, name in targets:
        match = (request.query.get(f"{prefix}Match") or [None])[0]
        not_match = (request.query.get(f"{prefix}NotMatch") or [None])[0]
        if match is None and not_match is None:
            continue
        live = _generation(storage, bucket, name)
        if (match is not None and int(match) != live) or (
                not_match is not None and int(not_match) == live):
            return True
    return False


def _checked(handler: Callable[..., Any], targets: Callable[[Any, Any], Iterator[Target]]
             ) -> Callable[..., Any]:
    def wrapper(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        if _condition_fails(request, storage, targets(request, storage)):
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": CONDITION_NOT_MET, "errors": [
                {"message": CONDITION_NOT_MET, "domain": "global", "reason": "conditionNotMet",
                 "locationType": "header", "location": "If-Match"}]}})
            return None
        return handler(request, response, storage, *args, **kwargs)

    wrapper.honours_preconditions = True  # type: ignore[attr-defined]
    return wrapper


def honour_preconditions() -> None:
    """Wrap the emulator's upload, delete and rewrite handlers (idempotent)."""
    if getattr(objects.insert, "honours_preconditions", False):
        return
    wrapped = {
        objects.insert: _checked(objects.insert, _upload_target),
        objects.upload_partial: _checked(objects.upload_partial, _upload_target),
        objects.delete: _checked(objects.delete, _delete_target),
        objects.rewrite: _checked(objects.rewrite, _rewrite_targets),
    }
    for _, handlers in emulator_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in wrapped:
                handlers[method] = wrapped[handler]
    # The router also calls objects.insert by name (uploads posted without /upload), and
    # insert calls upload_partial by name.
    objects.insert = wrapped[objects.insert]  # type: ignore[assignment]
    objects.upload_partial = wrapped[objects.upload_partial]  # type: ignore[assignment]
