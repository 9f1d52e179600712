"""Where offline data lives: a local folder, or a prefix on object storage (``s3://``, ``gs://``, ``abfs://``).

One thin layer over pyarrow's file systems, so that the dataset, the snapshots and the profiles are
written and read the same way wherever they are. A location is a URI (or a local path); the file
system for it is built from ``offline_store:`` in ``sluice.yaml`` (:class:`OfflineStoreConfig`), with
credentials from the environment, as the AWS, Google and Azure SDKs read them.

Writes are safe without rename, which object stores lack: on object storage an object becomes
visible only when its upload completes, so a reader never sees half a file, and every name sluice
writes comes from Kafka offsets (or a cutover time), so a write replayed after a crash replaces the
same object instead of adding a second one. On a local disk a file is written under a hidden
temporary name and renamed, which gives the same guarantee.

>>> location = Location.parse("/data/features/driver_stats")
>>> location.is_local, location.path
(True, '/data/features/driver_stats')
>>> location.child("date=2024-05-01").path
'/data/features/driver_stats/date=2024-05-01'
>>> Location.parse("s3://features/driver_stats", OfflineStoreConfig(region="eu-west-1")).uri
's3://features/driver_stats'
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from features.config import OBJECT_STORE_SCHEMES, OfflineStoreConfig

__all__ = ["Location", "StorageError"]

_T = TypeVar("_T")


class StorageError(OSError):
    """Object storage refused or failed a request; the message names the location and what to check."""


@dataclass(frozen=True)
class Location:
    """A folder or file on one file system: the file system, the path on it, and the URI it came from."""

    filesystem: pafs.FileSystem
    path: str
    """The path as the file system names it: ``bucket/prefix/...`` on object storage."""
    scheme: str
    """``file`` for a local path, else the URI's scheme."""

    @classmethod
    def parse(cls, uri: str, options: OfflineStoreConfig | None = None) -> Location:
        """The location of a local path or an object-storage URI."""
        parts = urlsplit(uri)
        scheme = parts.scheme.lower()
        if scheme in ("", "file") or len(scheme) == 1:  # a Windows drive letter is a local path too
            local = parts.path if scheme == "file" else uri
            return cls(pafs.LocalFileSystem(), str(Path(local).absolute()), "file")
        if scheme not in OBJECT_STORE_SCHEMES:
            raise StorageError(
                f"cannot store offline data at {uri!r}: the scheme {scheme!r} is not one of "
                f"file, {', '.join(OBJECT_STORE_SCHEMES)}"
            )
        if not parts.netloc:
            raise StorageError(f"{uri!r} names no bucket: write {scheme}://<bucket>/<prefix>")
        container, _, host = parts.netloc.partition("@")
        if host:  # abfs://<container>@<account>.dfs.core.windows.net/<path>
            path = f"{container}{parts.path}".rstrip("/")
            filesystem = _filesystem(scheme, options or OfflineStoreConfig(), container, host.split(".")[0])
            return cls(filesystem, path, scheme)
        path = f"{parts.netloc}{parts.path}".rstrip("/")
        return cls(_filesystem(scheme, options or OfflineStoreConfig(), parts.netloc), path, scheme)

    @property
    def is_local(self) -> bool:
        return self.scheme == "file"

    @property
    def uri(self) -> str:
        return self.path if self.is_local else f"{self.scheme}://{self.path}"

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def child(self, *parts: str) -> Location:
        return Location(self.filesystem, posixpath.join(self.path, *parts), self.scheme)

    def at(self, path: str) -> Location:
        """Another path on the same file system."""
        return Location(self.filesystem, path, self.scheme)

    def exists(self) -> bool:
        return bool(self._info(self.path).type != pafs.FileType.NotFound)

    def files(self, *, recursive: bool = True) -> Iterator[Location]:
        """The files under this folder (none when it does not exist)."""
        selector = pafs.FileSelector(self.path, recursive=recursive, allow_not_found=True)
        for info in self._call(lambda: self.filesystem.get_file_info(selector)):
            if info.type == pafs.FileType.File:
                yield Location(self.filesystem, info.path, self.scheme)

    def move_to(self, target: Location) -> None:
        """Move this folder (or file) to ``target`` on the same file system. Object storage has no
        rename: there each object is copied and then deleted."""
        if self.is_local:
            Path(self.path).rename(target.path)
            return
        for file in self.files():
            moved = target.path + file.path[len(self.path) :]
            try:
                self._call(partial(self.filesystem.move, file.path, moved))
            except NotImplementedError:  # Azure without a hierarchical namespace: copy, then delete
                self._call(partial(self.filesystem.copy_file, file.path, moved))
                file.delete()
        # On S3 pyarrow keeps a marker object for each folder it empties; the moved folder goes entirely.
        # On GCS and Azure a folder is only its objects' prefix: once they moved, there is nothing left.
        if self.exists():
            self._call(lambda: self.filesystem.delete_dir(self.path))

    def delete(self) -> None:
        """Delete this file; a file already gone is not an error."""
        try:
            self.filesystem.delete_file(self.path)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise StorageError(f"cannot delete {self.uri}: {error}") from error

    def read_parquet(self, *, schema: pa.Schema | None = None) -> pa.Table:
        return self._call(lambda: pq.read_table(self.path, schema=schema, filesystem=self.filesystem))

    def read_schema(self) -> pa.Schema:
        """The Parquet file's schema (with its metadata), from its footer alone."""
        return self._call(lambda: pq.read_schema(self.path, filesystem=self.filesystem))

    def write_parquet(self, table: pa.Table, **options: Any) -> None:
        """Write the table as this file, whole or not at all (see the module's note). On object storage
        the file is made in memory first: an upload stream that an error interrupts may still complete
        the object with what it had (apache/arrow#40502)."""
        if not self.is_local:
            buffer = pa.BufferOutputStream()
            pq.write_table(table, buffer, **options)
            self.write_bytes(buffer.getvalue().to_pybytes())
            return
        self._call(
            lambda: self._write(
                lambda path: pq.write_table(table, path, filesystem=self.filesystem, **options)
            )
        )

    def read_bytes(self) -> bytes:
        def read() -> bytes:
            with self.filesystem.open_input_stream(self.path) as stream:
                return bytes(stream.read())

        return self._call(read)

    def write_bytes(self, data: bytes) -> None:
        def write(path: str) -> None:
            with self.filesystem.open_output_stream(path) as stream:
                stream.write(data)

        self._call(lambda: self._write(write))

    def _write(self, write: Any) -> None:
        parent = posixpath.dirname(self.path)
        if not self.is_local:
            write(self.path)
            return
        self.filesystem.create_dir(parent, recursive=True)
        temporary = posixpath.join(parent, f".{self.name}.{uuid.uuid4().hex}.tmp")
        try:
            write(temporary)
            Path(temporary).replace(self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def _info(self, path: str) -> pafs.FileInfo:
        return self._call(lambda: self.filesystem.get_file_info(path))

    def _call(self, call: Callable[[], _T]) -> _T:
        try:
            return call()
        except FileNotFoundError:
            raise
        except OSError as error:
            if self.is_local:
                raise
            raise StorageError(f"object storage failed at {self.uri}: {error}") from error


@cache
def _filesystem(
    scheme: str, options: OfflineStoreConfig, bucket: str, account: str | None = None
) -> pafs.FileSystem:
    """One file system per scheme, options and bucket (or Azure account), reused: pyarrow's clients keep
    connection pools worth reusing."""
    if scheme == "s3":
        endpoint = (
            options.endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3")
            or os.environ.get("AWS_ENDPOINT_URL")
        )
        region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region is None and not endpoint:
            region = _bucket_region(bucket)  # AWS itself: ask where the bucket is
        kwargs: dict[str, Any] = {"region": region or "us-east-1"}
        if endpoint:
            parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            kwargs |= {"endpoint_override": parts.netloc, "scheme": parts.scheme}
        return pafs.S3FileSystem(**kwargs)
    if scheme in ("gs", "gcs"):
        # STORAGE_EMULATOR_HOST is how Google's SDKs are pointed at an emulator, which takes no credentials.
        emulator = os.environ.get("STORAGE_EMULATOR_HOST")
        endpoint = options.endpoint_url or emulator
        if endpoint:
            parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
            return pafs.GcsFileSystem(
                endpoint_override=parts.netloc, scheme=parts.scheme, anonymous=bool(emulator)
            )
        return pafs.GcsFileSystem()
    # abfs://container@account.dfs.core.windows.net/...: the account from the URI, else the environment's.
    account = account or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    if not account:
        raise StorageError(f"{scheme}:// needs the storage account's name in AZURE_STORAGE_ACCOUNT_NAME")
    azure: dict[str, Any] = {"account_name": account}
    if os.environ.get("AZURE_STORAGE_ACCOUNT_KEY"):
        azure["account_key"] = os.environ["AZURE_STORAGE_ACCOUNT_KEY"]
    if options.endpoint_url:
        parts = urlsplit(options.endpoint_url)
        azure |= {
            "blob_storage_authority": parts.netloc,
            "dfs_storage_authority": parts.netloc,
            "blob_storage_scheme": parts.scheme,
            "dfs_storage_scheme": parts.scheme,
        }
    return pafs.AzureFileSystem(**azure)


def _bucket_region(bucket: str) -> str | None:
    """The AWS region of a bucket, or None when it cannot be found (the request then says why)."""
    try:
        return str(pafs.resolve_s3_region(bucket))
    except OSError:
        return None
