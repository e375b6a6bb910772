"""Runs a command on a fresh pseudo-terminal, as a terminal emulator would: the command leads a
new session whose controlling terminal is the pty (80x24), so /dev/tty, Ctrl-C, Ctrl-Z and job
control behave as at a real terminal. Used by test/support/pty.mjs.

    python3 pty-run.py COMMAND [ARGS...]

What the command writes to the terminal comes out on stdout, byte for byte; what arrives on stdin is
typed into the terminal (so "\\x03" is Ctrl-C, "\\x1a" is Ctrl-Z, given the pty's default settings).
The first line on stderr is "pid N", the command's pid. The exit status is the command's (128+N for
a signal N).
"""
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios


def main() -> int:
    pid, master = pty.fork()
    if pid == 0:
        try:
            os.execvp(sys.argv[1], sys.argv[1:])
        finally:
            os._exit(127)
    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    sys.stderr.write(f"pid {pid}\n")
    sys.stderr.flush()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    stdin_open = True
    status = None
    while True:
        readable = [master] + ([0] if stdin_open else [])
        ready, _, _ = select.select(readable, [], [], 0.05)
        if status is not None and not ready:
            break  # the command has exited and its terminal has gone quiet (orphans may hold it open)
        if master in ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every process holding the terminal is gone
                data = b""
            if not data:
                break
            os.write(1, data)
        if 0 in ready:
            data = os.read(0, 65536)
            if data:
                os.write(master, data)
            else:
                stdin_open = False
        if status is None:
            done, code = os.waitpid(pid, os.WNOHANG)
            if done:
                status = code
    if status is None:
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


if __name__ == "__main__":
    sys.exit(main())
