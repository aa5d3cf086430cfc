"""WebSocket through Weft with Python's websockets, a client and server Weft did not write.

    python3 ws_echo.py server        # echo on 127.0.0.1, print the port, run until stdin closes
    python3 ws_echo.py client URL    # echo text and binary through URL; exit 0 when both pass
"""
import asyncio
import sys

import websockets


async def echo(ws, *_):
    async for message in ws:
        await ws.send(message)


async def server():
    async with websockets.serve(echo, "127.0.0.1", 0) as s:
        port = next(iter(s.sockets)).getsockname()[1]
        print(port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def client(url):
    async with websockets.connect(url, open_timeout=10) as ws:
        await ws.send("hello through weft")
        got = await asyncio.wait_for(ws.recv(), 10)
        if got != "hello through weft":
            raise SystemExit(f"text: got {got!r}")
        payload = bytes(range(256)) * 100
        await ws.send(payload)
        got = await asyncio.wait_for(ws.recv(), 10)
        if got != payload:
            raise SystemExit("binary: the echo differs")
    print("ok", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        asyncio.run(server())
    else:
        asyncio.run(client(sys.argv[2]))
