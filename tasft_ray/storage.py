"""Where a sweep's results live: a local (or NFS) folder, or an object store URI.

On a cluster the nodes share no disk: checkpoints, the sweep's saved config and its parent-run
marker go to ``s3://bucket/prefix`` (or ``gs://``, or any URI pyarrow understands), which Ray
Train and Tune write through a ``pyarrow.fs`` filesystem. An S3-compatible endpoint is
configured the way the AWS tools do it, from the environment: ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``; without them pyarrow uses the node's own
credential chain (an instance role, say). A :class:`Location` carries its filesystem, so it can
be shipped to Ray workers as it is: they never need the driver's environment or its disk.

Nothing here calls ``Path`` on a URI.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

import pyarrow.fs as pafs

from tasft_ray import files
from tasft_ray.errors import UserError, one_line
from tasft_ray.files import write_atomic


def is_uri(spec: str) -> bool:
    """``s3://…``, ``gs://…`` and the like; a plain path or ``file://`` is local."""
    scheme, sep, _ = str(spec).partition("://")
    return bool(sep) and scheme.isidentifier() and scheme != "file"


ATTEMPTS = 10  # tries per object-store request: AWS's standard backoff, ~45 s of outage
PROBE_ATTEMPTS = 2  # the writability check before any work


class RetryingS3FileSystem(pafs.S3FileSystem):
    """pyarrow's S3 filesystem whose every request (a checkpoint part upload, a download, a
    listing) is tried ``attempts`` times with AWS's standard exponential backoff on the errors
    an outage or throttling gives (5xx, dropped connections) — also in the Ray processes it is
    shipped to: pyarrow's own pickling drops the retry strategy, this one rebuilds it."""

    def __init__(self, attempts: int = ATTEMPTS, **options):
        retry = pafs.AwsStandardS3RetryStrategy(max_attempts=attempts)
        super().__init__(retry_strategy=retry, **options)
        self._options = (attempts, options)

    def __reduce__(self):
        return (_retrying_s3, self._options)


def _retrying_s3(attempts: int, options: dict) -> RetryingS3FileSystem:
    return RetryingS3FileSystem(attempts, **options)


def _s3(spec: str, attempts: int = ATTEMPTS) -> tuple[pafs.FileSystem, str]:
    env = os.environ
    endpoint = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    fs = RetryingS3FileSystem(
        attempts,
        access_key=env.get("AWS_ACCESS_KEY_ID") or None,
        secret_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
        session_token=env.get("AWS_SESSION_TOKEN") or None,
        region=env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or None,
        endpoint_override=endpoint or None,
        connect_timeout=5,
        request_timeout=30,
    )
    return fs, spec.split("://", 1)[1].rstrip("/")


@dataclass(frozen=True)
class Location:
    """A folder: ``fs`` and the ``path`` inside it; ``uri`` is how to name it to a user."""

    fs: pafs.FileSystem
    path: str
    uri: str

    @property
    def local(self) -> bool:
        return isinstance(self.fs, pafs.LocalFileSystem)

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def child(self, *parts: str) -> Location:
        path = posixpath.join(self.path, *parts)
        uri = posixpath.join(self.uri, *parts) if not self.local else path
        return Location(self.fs, path, uri)

    def parent(self) -> Location:
        uri = self.uri.rsplit("/", 1)[0] if not self.local else posixpath.dirname(self.path)
        return Location(self.fs, posixpath.dirname(self.path), uri)

    def exists(self, name: str) -> bool:
        info = self.fs.get_file_info(posixpath.join(self.path, name))
        return info.type != pafs.FileType.NotFound

    def read_text(self, name: str) -> str | None:
        """The file's text, or None when it does not exist."""
        if not self.exists(name):
            return None
        with self.fs.open_input_stream(posixpath.join(self.path, name)) as f:
            return f.read().decode("utf-8")

    def write_text(self, name: str, text: str) -> None:
        """Atomic either way: a local file through a rename, an object by its single PUT."""
        if self.local:
            write_atomic(Path(self.path) / name, text)
            return
        self.fs.create_dir(self.path, recursive=True)
        with self.fs.open_output_stream(posixpath.join(self.path, name)) as f:
            f.write(text.encode("utf-8"))

    def upload(self, local_dir: str | os.PathLike, name: str) -> None:
        """Copy a local folder to ``name`` below this location."""
        dest = posixpath.join(self.path, name)
        self.fs.create_dir(dest, recursive=True)
        pafs.copy_files(str(local_dir), dest, source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)  # fmt: skip

    def ray_storage(self) -> dict:
        """``storage_path`` (+ ``storage_filesystem`` for an object store) for Ray's RunConfig."""
        if self.local:
            return {"storage_path": self.path}
        return {"storage_path": self.path, "storage_filesystem": self.fs}

    def check_writable(self, key: str, probe: bool = False) -> None:
        """One line naming ``key`` unless a small object can be written, read back and deleted
        here (an unreachable endpoint, a missing bucket, no credentials). A local folder is
        checked without creating it (a file in its way, a read-only parent) unless ``probe``
        (``tasft-ray doctor``: a real write, which also finds a read-only mount)."""
        if self.local and not probe:
            files.check_writable(self.path, key)
            return
        name = f".tasft_probe_{uuid.uuid4().hex[:12]}"
        # a store that does not answer now is a setting to fix, not an outage to ride out: a
        # few tries, not sweep.storage_attempts' minutes of backoff before the one line
        here = self
        if isinstance(self.fs, RetryingS3FileSystem):
            here = replace(self, fs=_retrying_s3(PROBE_ATTEMPTS, self.fs._options[1]))
        try:
            here.write_text(name, "ok")
            ok = here.read_text(name) == "ok"
            here.fs.delete_file(posixpath.join(self.path, name))
        except (OSError, ValueError) as exc:
            raise UserError(
                f"{key} {self.uri}: cannot write there ({one_line(exc, 200)}); for an object "
                "store check AWS_ENDPOINT_URL / credentials and that the bucket exists"
            ) from None
        if not ok:
            raise UserError(f"{key} {self.uri}: a file written there did not read back")


def location(spec: str | os.PathLike, key: str, attempts: int = ATTEMPTS) -> Location:
    """Parse ``spec`` (a path, ``file://``, or an object store URI) into a Location; a local
    path is made absolute, so every process sees the same folder. ``attempts``: tries per S3
    request (``sweep.storage_attempts``)."""
    spec = str(spec)
    if not is_uri(spec):
        path = os.path.abspath(os.path.expanduser(spec.removeprefix("file://")))
        return Location(pafs.LocalFileSystem(), path, path)
    try:
        fs, path = (_s3(spec, attempts) if spec.startswith("s3://")
                    else pafs.FileSystem.from_uri(spec))  # fmt: skip
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise UserError(
            f"{key} {spec}: not a storage URI pyarrow can open ({one_line(exc, 200)})"
        ) from None
    return Location(fs, path, spec.rstrip("/"))
