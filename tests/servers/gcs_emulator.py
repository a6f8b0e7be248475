"""gcp-storage-emulator, made to honour upload preconditions as Cloud Storage does.

gcp-storage-emulator (2026.7.19) ignores ``ifGenerationMatch`` / ``ifGenerationNotMatch``:
an upload with ``ifGenerationMatch=0`` overwrites an existing object, where Cloud Storage
answers ``412 conditionNotMet`` and leaves the object alone. resutil's exclusive create
relies on that answer, so the tests wrap the emulator's two upload handlers (one-request
uploads, and the chunk requests of a resumable session, whose URL carries the conditions
given when the session was started) with the check Cloud Storage makes:

- ``ifGenerationMatch=N``: the live object's generation must be N; 0 means "no live object";
- ``ifGenerationNotMatch=N``: the live object's generation must not be N.

Only requests that pass a condition are affected. The emulator serves one request at a time
(``http.server.HTTPServer``), so the check and the store cannot interleave with another
request, as the check is atomic with the write on Cloud Storage. Nothing of resutil is
changed: this patches the test server only, in the process that starts it.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Callable

from gcp_storage_emulator import server as emulator_server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects

CONDITION_NOT_MET = "At least one of the pre-conditions you specified did not hold."


def _live_generation(request: Any, storage: Any) -> int:
    bucket = request.params.get("bucket_name")
    name = (request.query.get("name") or [None])[0]
    upload_id = (request.query.get("upload_id") or [None])[0]
    if name is None and upload_id is not None:  # a resumable chunk: the session names it
        try:
            name = storage.get_resumable_file_obj(upload_id)["name"]
        except (NotFound, KeyError, TypeError):
            return 0  # no such session: the handler answers that
    if name is None and isinstance(request.data, dict):  # multipart: the metadata part
        name = (request.data.get("meta") or {}).get("name")
    try:
        return int(storage.get_file_obj(bucket, name)["generation"])
    except (NotFound, KeyError, TypeError):
        return 0


def _condition_fails(request: Any, storage: Any) -> bool:
    match = (request.query.get("ifGenerationMatch") or [None])[0]
    not_match = (request.query.get("ifGenerationNotMatch") or [None])[0]
    if match is None and not_match is None:
        return False
    live = _live_generation(request, storage)
    return (match is not None and int(match) != live) or (
        not_match is not None and int(not_match) == live)


def _checked(handler: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        resumable_start = (request.query.get("uploadType") or [""])[0] == "resumable" \
            and "upload_id" not in request.query
        if not resumable_start and _condition_fails(request, storage):
            response.status = HTTPStatus.PRECONDITION_FAILED
            response.json({"error": {"code": 412, "message": CONDITION_NOT_MET, "errors": [
                {"message": CONDITION_NOT_MET, "domain": "global", "reason": "conditionNotMet",
                 "locationType": "header", "location": "If-Match"}]}})
            return None
        return handler(request, response, storage, *args, **kwargs)

    wrapper.honours_preconditions = True  # type: ignore[attr-defined]
    return wrapper


def honour_preconditions() -> None:
    """Wrap the emulator's upload handlers (idempotent)."""
    if getattr(objects.insert, "honours_preconditions", False):
        return
    originals = {objects.insert: _checked(objects.insert),
                 objects.upload_partial: _checked(objects.upload_partial)}
    for _, handlers in emulator_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in originals:
                handlers[method] = originals[handler]
    # The router also calls objects.insert by name for uploads posted without /upload.
    objects.insert = originals[objects.insert]  # type: ignore[assignment]
    objects.upload_partial = originals[objects.upload_partial]  # type: ignore[assignment]
