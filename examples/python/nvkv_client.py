#!/usr/bin/env python3
"""A client of nvkv in Python, over its Cap'n Proto API with pycapnp.

It follows the rules every client of schema/nvkv.capnp follows
(docs/api.md, "Clients in other languages"):

1. Connect to a member's client port and take its bootstrap capability,
   a `Node`.
2. Ask it for the partition map, and send each key's request to the port of
   the shard that runs the key's group (any shard would forward it; the
   right one saves a hop between cores).
3. Read every result as a union of `ok` and `error`: a refusal is a typed
   `Error` (code, message, hints), and the connection stays open.
4. Watch by passing a `Watcher` capability of your own: the node calls it
   with batches of events, under Cap'n Proto's flow control.

Usage: python3 nvkv_client.py [HOST:PORT] [--cacert CA --cert CERT --key KEY]
Needs pycapnp (pip install pycapnp) and the schema directory of the repository
(schema/nvkv.capnp and schema/import, found from this file, or --schema DIR).
"""

import argparse
import asyncio
import pathlib
import ssl

import capnp

SCHEMA = pathlib.Path(__file__).resolve().parents[2] / "schema"


def crc32c(data):
    """CRC-32C (Castagnoli), the checksum nvkv places keys with."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def partition_prefix(key, depth):
    """The bytes of `key` that choose its group (src/kv/partition.rs): a key
    starting with '/' up to the '/' after its first `depth` segments, any
    other key up to its first '/'; a key with fewer slashes is its own
    prefix."""
    wanted = depth + 1 if key.startswith(b"/") else 1
    seen = 0
    for index, byte in enumerate(key):
        if byte == ord("/"):
            seen += 1
            if seen == wanted:
                return key[: index + 1]
    return key


class Refused(Exception):
    """A typed refusal of the node: its ErrorCode and message."""

    def __init__(self, error):
        super().__init__(f"{error.code}: {error.message}")
        self.code = str(error.code)


def answer(result):
    """The `ok` of a result union, or Refused with the node's error."""
    if result.which() == "error":
        raise Refused(result.error)
    return result.ok


class Client:
    """One connection to a member's client port, plus one per shard."""

    def __init__(self, schema, endpoint, tls):
        self.schema = schema
        self.host, _, port = endpoint.rpartition(":")
        self.port = int(port)
        self.tls = tls

    async def connect(self, port):
        extra = {}
        if self.tls is not None:
            # The node's certificate must name the host dialed (an IP SAN
            # for an IP address).
            extra = {"ssl": self.tls, "server_hostname": self.host}
        stream = await capnp.AsyncIoStream.create_connection(host=self.host, port=port, **extra)
        return capnp.TwoPartyClient(stream).bootstrap().cast_as(self.schema.Node)

    async def open(self):
        self.node = await self.connect(self.port)
        partition_map = (await self.node.partitionMap()).map
        self.groups = partition_map.groups
        self.depth = partition_map.partitionDepth
        # The node names its shards by the address it bound: reach them the
        # way the main port was reached.
        self.shards = [await self.connect(int(endpoint.rpartition(":")[2]))
                       for endpoint in partition_map.shardEndpoints]
        status = (await self.node.status()).status
        return status

    def route(self, key):
        """(group, shard, the shard's KV capability) for `key`."""
        group = crc32c(partition_prefix(key, self.depth)) % self.groups
        shard = group % len(self.shards)
        return group, shard, self.shards[shard].kv().kv


async def main(arguments):
    schema = capnp.load(str(arguments.schema / "nvkv.capnp"), imports=[str(arguments.schema / "import")])
    tls = None
    if arguments.cacert:
        tls = ssl.create_default_context(cafile=arguments.cacert)
        if arguments.cert:
            tls.load_cert_chain(arguments.cert, arguments.key)
    client = Client(schema, arguments.endpoint, tls)
    status = await client.open()
    print(f"connected to member {status.memberId} (nvkv {status.version}): {client.groups} groups on "
          f"{len(client.shards)} shards, partition depth {client.depth}")

    key = b"/examples/python/greeting"
    group, shard, kv = client.route(key)
    # Watch the prefix before writing, so the watch sees the writes: the
    # node registers it in the group before it answers.
    events = asyncio.Queue()

    class Watcher(schema.Watcher.Server):
        """The capability the node calls back with events (streaming calls:
        the node sends the next batch once this one is taken)."""

        async def events(self, watchId, header, events, **_):
            for event in events:
                # Copy out of the message: it is gone once this call returns.
                await events_put(str(event.kind), bytes(event.kv.key), bytes(event.kv.value), header.revision)

        async def progress(self, watchId, header, **_):
            pass

        async def cancelled(self, watchId, group, error, **_):
            await events_put("cancelled", str(error.code).encode(), str(error.message).encode(), 0)

    async def events_put(*event):
        await events.put(event)

    prefix = b"/examples/python/"
    watch = client.shards[shard].watch().watch
    watching = (await watch.watch(request={"key": prefix, "rangeEnd": prefix[:-1] + b"0"},
                                  watcher=Watcher())).result
    if watching.which() == "error":
        raise Refused(watching.error)
    handle = watching.handle

    put = answer((await kv.put(key=key, value=b"hello from python", lease=0, prevKv=False)).result)
    print(f"put {key.decode()}: group {group} on shard {shard}, revision {put.header.revision}")
    got = answer((await kv.range(key=key, rangeEnd=b"", limit=0, revision=0, countOnly=False,
                                 keysOnly=False, serializable=False)).result)
    for item in got.kvs:
        print(f"get {bytes(item.key).decode()}: {bytes(item.value).decode()} (version {item.version}, "
              f"mod revision {item.modRevision})")
    answer((await kv.deleteRange(key=key, rangeEnd=b"", prevKv=False)).result)
    for _ in range(2):
        kind, event_key, value, revision = await asyncio.wait_for(events.get(), timeout=10)
        shown = f" {value.decode()}" if kind == "put" else ""
        print(f"watched {kind.upper()} {event_key.decode()}{shown} at revision {revision}")
    await handle.cancel()

    try:
        answer((await kv.put(key=key, value=b"x", lease=0x99, prevKv=False)).result)
    except Refused as refused:
        print(f"refused as expected: {refused}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="A Python client of nvkv over Cap'n Proto.")
    parser.add_argument("endpoint", nargs="?", default="127.0.0.1:7379", help="a member's client address")
    parser.add_argument("--schema", type=pathlib.Path, default=SCHEMA, help="the schema directory")
    parser.add_argument("--cacert", help="speak TLS and verify the node against this CA (PEM)")
    parser.add_argument("--cert", help="a client certificate (PEM), for mutual TLS")
    parser.add_argument("--key", help="the key of --cert (PEM)")
    asyncio.run(capnp.run(main(parser.parse_args())))
