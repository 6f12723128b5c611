"""A throwaway PostgreSQL cluster for tests that stop or restart the server.

`initdb` into a fresh temporary folder and `pg_ctl` on a free port, so a test
can break its own server without touching the shared one on :5432. initdb
refuses to run as root, so as root the cluster runs as the `postgres` user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.service_process import free_port

BIN = Path(os.environ.get("KASP_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class ClusterUnavailable(Exception):
    """This machine cannot run a throwaway cluster (no binaries, or no user to run them as)."""


class ThrowawayCluster:
    def __init__(self) -> None:
        if not (BIN / "initdb").exists():
            raise ClusterUnavailable(f"no PostgreSQL binaries in {BIN} (set KASP_TEST_PG_BIN)")
        self._as: list[str] = []
        self.dir = Path(tempfile.mkdtemp(prefix="kasp-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                shutil.rmtree(self.dir)
                raise ClusterUnavailable(
                    "running as root and there is no `postgres` user for initdb"
                ) from None
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.data = self.dir / "data"
        self.admin_dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run(
            BIN / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"
        )

    def _run(self, *args: object) -> None:
        done = subprocess.run(
            [*self._as, *map(str, args)], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")

    def _ctl(self, action: str, *args: str) -> None:
        self._run(BIN / "pg_ctl", action, "-D", self.data, "-w", "-t", "60", *args)

    def start(self, *settings: str) -> None:
        """Start the server; `settings` ("name=value") come after the defaults, so they win."""
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        options += "".join(f" -c {setting}" for setting in settings)
        self._ctl("start", "-o", options, "-l", str(self.dir / "server.log"))

    def stop(self) -> None:
        self._ctl("stop", "-m", "fast")

    def restart(self) -> None:
        """Stop (disconnecting every client) and start again, as an operator's restart does."""
        self.stop()
        self.start()

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._ctl("stop", "-m", "immediate")
        shutil.rmtree(self.dir, ignore_errors=True)
