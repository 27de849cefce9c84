"""A small SSH server on 127.0.0.1 for the host key tests (paramiko; no sshd needed).

It presents a host key generated per server, accepts any client key, and answers every command
(``git-upload-pack '...'``) on stderr with :data:`NO_REPOSITORY` and exit status 128, so a client
that gets that far has passed the host key check and authentication. It records what it saw.
"""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import paramiko

NO_REPOSITORY = "fatal: the indexpub test SSH server has no repository"


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: SshServer) -> None:
        self.server = server

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self.server.authenticated.append(username)
        return paramiko.AUTH_SUCCESSFUL

    def check_channel_request(self, kind: str, chanid: int) -> int:
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        self.server.commands.append(command.decode(errors="replace"))
        self.server.channels.append(channel)  # paramiko closes a channel nobody refers to
        threading.Thread(target=_refuse, args=(channel,), daemon=True).start()
        return True


def _refuse(channel: paramiko.Channel) -> None:
    channel.send_stderr((NO_REPOSITORY + "\n").encode())
    channel.send_exit_status(128)
    channel.close()


class SshServer:
    """Serves SSH on 127.0.0.1 (an ephemeral port) until :meth:`close`."""

    def __init__(self) -> None:
        self.host_key = paramiko.ECDSAKey.generate()
        self.authenticated: list[str] = []
        self.commands: list[str] = []
        self.channels: list[paramiko.Channel] = []
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._stop = threading.Event()
        self._transports: list[paramiko.Transport] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections += 1
            transport = paramiko.Transport(sock)
            transport.add_server_key(self.host_key)
            self._transports.append(transport)
            try:
                transport.start_server(server=_Interface(self))
            except (paramiko.SSHException, EOFError, OSError):
                transport.close()  # the client hung up, e.g. on refusing our host key
                continue
            threading.Thread(target=self._accept_channels, args=(transport,), daemon=True).start()

    def _accept_channels(self, transport: paramiko.Transport) -> None:
        while transport.is_active() and not self._stop.is_set():
            channel = transport.accept(0.2)
            if channel is not None:
                self.channels.append(channel)

    def known_hosts_line(self, key: paramiko.PKey | None = None) -> str:
        """This server's line in a known_hosts file (with ``key`` instead of its own)."""
        key = key or self.host_key
        return f"[127.0.0.1]:{self.port} {key.get_name()} {key.get_base64()}\n"

    def url(self) -> str:
        return f"ssh://git@127.0.0.1:{self.port}/index.git"

    def close(self) -> None:
        self._stop.set()
        self._listener.close()
        for transport in self._transports:
            transport.close()
        self._thread.join(5)


def write_client_key(path: Path) -> Path:
    """A fresh client key for ssh's ``-i`` (the server accepts any)."""
    paramiko.ECDSAKey.generate().write_private_key_file(str(path))
    path.chmod(0o600)
    return path
