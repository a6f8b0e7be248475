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

Downloads are made to answer as Cloud Storage does where the emulator does not: a
``generation=N`` that is not the live object's is a 404 (the emulator serves the live
object whatever generation is asked for), and a ``Range`` starting at or past the end is a
416 (the emulator answers 206 with nothing). Ranges it serves as GCS does.

Only requests that pass a condition or ask for a generation or range are affected. The
emulator serves one request at a time (``http.server.HTTPServer``), so a check and the
change it guards cannot interleave with another request, just as Cloud Storage checks and
writes in one step. Nothing of resutil is
changed: this patches the test server only, in the process that starts it.
"""

from __future__ import annotations

import re
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


def _download_checked(handler: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(request: Any, response: Any, storage: Any, *args: Any, **kwargs: Any) -> Any:
        bucket, name = request.params.get("bucket_name"), request.params.get("object_id")
        wanted = (request.query.get("generation") or [None])[0]
        live = _generation(storage, bucket, name)
        if wanted is not None and live and int(wanted) != live:
            message = f"No such object: {bucket}/{name}"
            response.status = HTTPStatus.NOT_FOUND
            response.json({"error": {"code": 404, "message": message, "errors": [
                {"message": message, "domain": "global", "reason": "notFound"}]}})
            return None
        m = re.fullmatch(r"\s*bytes=(\d+)-(\d*)", request.get_header("range", None) or "")
        if m and live:
            size = int(storage.get_file_obj(bucket, name).get("size") or 0)
            if int(m.group(1)) >= size:
                response.status = HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE
                response["Content-Range"] = f"bytes */{size}"
                response.json({"error": {"code": 416, "message": "Requested range not "
                                         "satisfiable", "errors": [{"reason": "invalid"}]}})
                return None
        return handler(request, response, storage, *args, **kwargs)

    wrapper.honours_preconditions = True  # type: ignore[attr-defined]
    return wrapper


def honour_preconditions() -> None:
    """Wrap the emulator's upload, delete, rewrite and download handlers (idempotent)."""
    if getattr(objects.insert, "honours_preconditions", False):
        return
    wrapped = {
        objects.insert: _checked(objects.insert, _upload_target),
        objects.upload_partial: _checked(objects.upload_partial, _upload_target),
        objects.delete: _checked(objects.delete, _delete_target),
        objects.rewrite: _checked(objects.rewrite, _rewrite_targets),
        objects.download: _download_checked(objects.download),
    }
    for _, handlers in emulator_server.HANDLERS:
        for method, handler in list(handlers.items()):
            if handler in wrapped:
                handlers[method] = wrapped[handler]
    # The router also calls objects.insert by name (uploads posted without /upload), insert
    # calls upload_partial by name, and get (?alt=media) calls download by name.
    objects.download = wrapped[objects.download]  # type: ignore[assignment]
    objects.insert = wrapped[objects.insert]  # type: ignore[assignment]
    objects.upload_partial = wrapped[objects.upload_partial]  # type: ignore[assignment]
