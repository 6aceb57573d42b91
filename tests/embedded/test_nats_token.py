"""An embedded NATS with a token refuses clients without it; a client connects with the
token in its URL and presents it to every server, also to those a cluster announces
(nats-py would greet those anonymously): after its server stops, it carries on on
another one it was only told of."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS

from services.embedded import EmbeddedNats, NatsCluster
from services.infra.connections import connect_nats
from services.settings import Settings
from tests._infra import free_port, short_tmp_dir, wait_until

_TOKEN = "a-token-of-the-data-folder-0123456789"


def _nodes(root: Path) -> list[EmbeddedNats]:
    route_ports = [free_port(), free_port()]
    return [
        EmbeddedNats(
            root / f"n{index}",
            free_port(),
            token=_TOKEN,
            cluster=NatsCluster(
                server_name=f"n{index}",
                route_port=route_ports[index],
                peer_route_ports=(route_ports[1 - index],),
            ),
            startup_timeout=60.0,
        )
        for index in range(2)
    ]


async def test_a_client_presents_the_token_to_the_servers_a_cluster_announces() -> None:
    with short_tmp_dir("clinai-token-") as root:
        first, second = nodes = _nodes(root)
        try:
            await asyncio.gather(*(node.start() for node in nodes))  # each waits for both
            assert first.url == f"nats://{_TOKEN}@127.0.0.1:{first.port}"
            anonymous = NATS()
            try:
                with pytest.raises(nats.errors.Error, match="Authorization Violation"):
                    await anonymous.connect(f"nats://127.0.0.1:{first.port}", allow_reconnect=False)
            finally:
                await anonymous.close()

            settings = Settings(data_dir=root, nats_url=first.url)
            nc = await connect_nats(settings, name="token-test")
            try:
                await wait_until(
                    lambda: any(u.port == second.port for u in nc.discovered_servers),
                    what="the cluster to announce its other server",
                )
                await first.stop()
                await wait_until(
                    lambda: (
                        nc.is_connected
                        and nc.connected_url is not None
                        and nc.connected_url.port == second.port
                    ),
                    what="the client to carry on on the announced server",
                    timeout_s=20,
                )
                await nc.flush(timeout=5)
            finally:
                await nc.close()
        finally:
            await asyncio.gather(*(node.stop() for node in nodes))
