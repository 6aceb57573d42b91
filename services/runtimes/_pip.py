"""What pip needs to install a package's requirements, for every runtime: the process
runtime passes it on pip's command line, the docker runtime writes it into a pip.conf
of the image's discarded build stage. It may hold credentials (in index URLs)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import msgspec

__all__ = ["DEBIAN_CA_BUNDLE", "PipOptions", "build_step_env"]

DEBIAN_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


def build_step_env(*, without: tuple[str, ...] = ()) -> dict[str, str]:
    """The host environment for a build step, without ClinAI's settings (`CLINAI_*`:
    they hold the stack's NATS token and Postgres password, and a step runs a
    package's code) nor the variables whose names start with one of `without`."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CLINAI_", *without))}


class PipOptions(msgspec.Struct, frozen=True, kw_only=True):
    index_url: str | None = None  # None: pip's own default
    extra_index_urls: tuple[str, ...] = ()
    ca_bundle: Path | None = None  # None: pip's own bundle

    @classmethod
    async def with_host_ca(
        cls, *, index_url: str | None, extra_index_urls: tuple[str, ...], ca_bundle: Path | None
    ) -> PipOptions:
        """The options, with the host's Debian CA bundle when none is given and it
        exists (a bundle an operator extended with a proxy's CA, unlike pip's own)."""
        if ca_bundle is None and await asyncio.to_thread(DEBIAN_CA_BUNDLE.is_file):
            ca_bundle = DEBIAN_CA_BUNDLE
        return cls(index_url=index_url, extra_index_urls=extra_index_urls, ca_bundle=ca_bundle)

    def args(self) -> list[str]:
        """pip's command-line options for the index and the CA bundle."""
        args = ["--index-url", self.index_url] if self.index_url else []
        for url in self.extra_index_urls:
            args += ["--extra-index-url", url]
        if self.ca_bundle is not None:
            args += ["--cert", str(self.ca_bundle)]
        return args

    def conf(self, *, cert: str | None) -> str:
        """The same as a pip.conf, with `cert` as the CA bundle's path where pip reads it."""
        lines = ["[global]"]
        if self.index_url:
            lines.append(f"index-url = {self.index_url}")
        if self.extra_index_urls:
            lines.append("extra-index-url = " + " ".join(self.extra_index_urls))
        if cert is not None:
            lines.append(f"cert = {cert}")
        return "\n".join(lines) + "\n"

    @staticmethod
    def env() -> dict[str, str]:
        """The build step environment without any pip configuration: the index is explicit."""
        env = build_step_env(without=("PIP_",))
        env["PIP_CONFIG_FILE"] = os.devnull
        env["PYTHONNOUSERSITE"] = "1"
        return env
