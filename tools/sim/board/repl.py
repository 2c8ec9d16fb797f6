# The board's serial REPL in the simulator (runs inside the MicroPython unix VM). Not a board
# module: the firmware never imports it. power_on.py hands the boot to it when the runner gives
# the board a serial port (env ESP32SIM_REPL, tools/sim/simulate.py: a pty for mpremote).
#
# What the ESP32 port does (ports/esp32/main.c, shared/runtime/pyexec.c), done here:
# - boot.py, then main.py (friendly REPL mode only), with Ctrl-C raising KeyboardInterrupt in
#   them; then the REPL, in the mode it was left in: friendly (banner, ">>> ", line editing,
#   paste mode) or raw (Ctrl-A: "raw REPL; CTRL-B to exit\r\n>", code + Ctrl-D -> "OK", output,
#   \x04, error, \x04, ">"; raw-paste "\x05A\x01" with its flow-control window; Ctrl-B back).
# - Ctrl-D on an empty line, or SystemExit, is a soft reset: "MPY: soft reboot\r\n", then boot.py
#   in a fresh VM. The task watchdog and the REPL mode survive it (simstate.keep_for_soft_reset).
# - The UART: stdin/stdout of the VM are the serial line. A receive thread plays the UART
#   interrupt: while code runs, Ctrl-C is not a character but a KeyboardInterrupt in the main
#   thread (the runner sends SIGINT when asked on the board line, fd ESP32SIM_REPL: the unix VM
#   raises it in its main thread only, so here boot, main and the REPL run in the main thread and
#   power_on's supervisor in another); other bytes wait in the receive buffer.
# - Resets end the VM through the runner (b"R" + exit code on the board line): a thread cannot
#   end a MicroPython process, and a board's reset does not wait for Python either.
import _thread
import io
import os
import select
import sys
import time

import simstate as _s

CTRL_A, CTRL_B, CTRL_C, CTRL_D, CTRL_E = 1, 2, 3, 4, 5
OK, ERROR, FORCED_EXIT = 1, 0, 0x100  # pyexec's results (PYEXEC_FORCED_EXIT: a soft reset)
# Raw-paste flow control: half of the ESP32's stdin buffer (MICROPY_REPL_STDIN_BUFFER_MAX 256)
WINDOW = 128

_out = sys.stdout.buffer


def w(data):
    _out.write(data if isinstance(data, bytes) else data.encode())


class Uart:
    """The serial line: receive buffer, Ctrl-C as an interrupt while code runs, the board line."""

    def __init__(self, line_fd):
        self.line = open(int(line_fd), "wb")
        self.rx = bytearray()
        self.pos = 0
        self.mu = _thread.allocate_lock()
        self.ready = _thread.allocate_lock()  # held while the REPL waits for a byte
        self.ready.acquire()
        self.waiting = [False]
        self.intr = [False]  # code runs: Ctrl-C interrupts it (mp_interrupt_char)
        self.sent = [0]  # interrupts asked for / KeyboardInterrupts taken by the main thread
        self.got = [0]
        _thread.start_new_thread(self._receive, ())

    def _receive(self):
        # stdin is non-blocking (the runner made it so): poll, then take what came
        buf = bytearray(256)
        inp = sys.stdin.buffer
        p = select.poll()
        p.register(0, select.POLLIN)
        while True:
            p.poll(-1)
            n = inp.readinto(buf)
            if n is None:
                continue
            if not n:
                return  # the runner closed the line: nothing more will come
            with self.mu:
                for i in range(n):
                    c = buf[i]
                    if c == CTRL_C and self.intr[0]:
                        self.sent[0] += 1
                        self.line.write(b"\x03")
                    else:
                        self.rx.append(c)
                if self.waiting[0] and self.pos < len(self.rx):
                    self.waiting[0] = False
                    self.ready.release()

    def getc(self):
        while True:
            with self.mu:
                if self.pos < len(self.rx):
                    c = self.rx[self.pos]
                    self.pos += 1
                    if self.pos == len(self.rx):
                        self.rx = bytearray()
                        self.pos = 0
                    return c
                self.waiting[0] = True
            self.ready.acquire()

    def run(self, fn):
        """fn() as pyexec runs code: Ctrl-C raises KeyboardInterrupt in it. Returns what it
        raised (None: nothing)."""
        exc = None
        try:
            try:
                self.intr[0] = True
                fn()
            finally:
                self.intr[0] = False
        except BaseException as e:  # noqa: B036 - the REPL reports every exception
            exc = e
        if isinstance(exc, KeyboardInterrupt):
            self.got[0] += 1
        # A Ctrl-C that came just as the code ended is still on its way: take it here, as pyexec
        # clears a pending exception after the code (a bounded wait: the runner may be gone)
        t0 = time.ticks_ms()
        while self.got[0] < self.sent[0] and time.ticks_diff(time.ticks_ms(), t0) < 2000:
            try:
                time.sleep_ms(1)
            except KeyboardInterrupt:
                self.got[0] += 1
        self.got[0] = self.sent[0]
        return exc

    def reset(self, code):
        """Ask the runner to end this VM with exit code `code` (a reset); never returns."""
        self.line.write(bytes((ord("R"), code)))
        while True:
            time.sleep_ms(1000)


_uart = None
_raw = [False]  # the REPL's mode (pyexec_mode_kind), kept through a soft reset


def _print_exception(e):
    # as the board prints it: the traceback starts at the code, not in this module
    buf = io.StringIO()
    sys.print_exception(e, buf)
    for line in buf.getvalue().split("\n")[:-1]:
        if '/repl.py"' not in line:
            w(line + "\n")


def _execute(src, mode, g, eof):
    """Compile and run src in the __main__ namespace g (parse_compile_execute); eof: the raw
    REPL's \\x04 after the output and after the error."""
    def go():
        exec(compile(src, "<stdin>", mode), g)

    exc = _uart.run(go)
    if eof:
        w(b"\x04")
    ret = OK
    if isinstance(exc, SystemExit):
        ret = FORCED_EXIT
    elif exc is not None:
        _print_exception(exc)
        ret = ERROR
    if eof:
        w(b"\x04")
    return ret


def _banner():
    name = sys.version.split("; ", 1)[-1]
    w("%s; %s\r\nType \"help()\" for more information.\r\n"
      % (name, getattr(sys.implementation, "_machine", "ESP32 module with ESP32")))


def raw_repl(g):
    w("raw REPL; CTRL-B to exit\r\n")
    while True:
        line = bytearray()
        w(">")
        while True:
            c = _uart.getc()
            if c == CTRL_A:
                if len(line) == 2 and line[0] == CTRL_E:
                    ret = _raw_paste(line[1], g)
                    if ret & FORCED_EXIT:
                        return ret
                    line = bytearray()
                    w(">")
                    continue
                w("raw REPL; CTRL-B to exit\r\n")
                line = bytearray()
                w(">")
            elif c == CTRL_B:
                w("\r\n")
                _raw[0] = False
                return 0
            elif c == CTRL_C:
                line = bytearray()
            elif c == CTRL_D:
                break
            else:
                line.append(c)
        w("OK")
        if not line:
            w("\r\n")
            return FORCED_EXIT
        ret = _execute(bytes(line), "exec", g, True)
        if ret & FORCED_EXIT:
            return ret


def _raw_paste(cmd, g):
    """Raw-paste mode (do_reader_stdin): the host sends at most WINDOW bytes more each time the
    board sends \\x01; \\x04 from the host ends the code, \\x04 from the board acknowledges."""
    if cmd != ord("A"):
        w(b"R\x00")  # a command this board does not know: the host falls back
        return 0
    w(b"R\x01")
    w(bytes((WINDOW & 0xFF, WINDOW >> 8, 1)))
    src = bytearray()
    remain = WINDOW
    while True:
        c = _uart.getc()
        if c == CTRL_C or c == CTRL_D:
            w(b"\x04")
            if c == CTRL_C:  # the lexer raises it: reported as the code's exception
                w(b"\x04")
                _print_exception(KeyboardInterrupt())
                w(b"\x04")
                return ERROR
            break
        src.append(c)
        remain -= 1
        if remain == 0:
            w(b"\x01")
            remain = WINDOW
    return _execute(bytes(src), "exec", g, True)


def _more(src):
    # py/repl.c's mp_repl_continue_with_input, simplified: open brackets or a trailing
    # backslash, or a compound statement until a blank line
    lines = src.split("\n")
    depth = 0
    for ch in src:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
    if depth > 0 or src.endswith("\\") or src.count('"""') % 2 or src.count("'''") % 2:
        return True
    head = lines[0].rstrip()
    if head.endswith(":") or head.startswith("@"):
        return lines[-1].strip() != ""
    return False


def _readline(prompt):
    """(control char or 0, line) as shared/readline: echo, backspace, Enter; Ctrl-A..E on an
    empty line and Ctrl-C anytime end the line early."""
    w(prompt)
    line = bytearray()
    esc = 0
    while True:
        c = _uart.getc()
        if esc:  # an escape sequence (arrow keys...): not supported, dropped
            esc = 0 if (esc == 2 and 0x40 <= c <= 0x7E) or (esc == 1 and c != ord("[")) else 2
            continue
        if CTRL_A <= c <= CTRL_E and not line or c == CTRL_C:
            return c, bytes(line).decode()
        if c == ord("\r"):
            w("\r\n")
            return 0, bytes(line).decode()
        if c == 27:
            esc = 1
        elif c in (8, 127):
            if line:
                line = line[:-1]
                w("\b \b")
        elif c >= 32:
            line.append(c)
            _out.write(bytes((c,)))


def friendly_repl(g):
    _banner()
    while True:
        ret, line = _readline(">>> ")
        mode = "single"
        if ret == CTRL_A:
            w("\r\n")
            _raw[0] = True
            return 0
        if ret == CTRL_B:
            w("\r\n")
            _banner()
            continue
        if ret == CTRL_C:
            w("\r\n")
            continue
        if ret == CTRL_D:
            w("\r\n")
            return FORCED_EXIT
        if ret == CTRL_E:
            w("\r\npaste mode; Ctrl-C to cancel, Ctrl-D to finish\r\n=== ")
            buf = bytearray()
            while True:
                c = _uart.getc()
                if c == CTRL_C:
                    buf = None
                    break
                if c == CTRL_D:
                    break
                buf.append(c)
                w("\r\n=== " if c == ord("\r") else bytes((c,)))
            w("\r\n")
            if buf is None:
                continue
            line = bytes(buf).decode()
            mode = "exec"
        elif not line:
            continue
        else:
            cancelled = False
            while _more(line):
                ret, more = _readline("... ")
                if ret == CTRL_C:
                    w("\r\n")
                    cancelled = True
                    break
                if ret == CTRL_D:
                    break
                line += "\n" + more
            if cancelled:
                continue
        if _execute(line, mode, g, False) & FORCED_EXIT:
            return FORCED_EXIT


def _pyexec_file(name, g, find):
    """pyexec_file_if_exists: OK (a missing file too), ERROR (traceback printed) or FORCED_EXIT."""
    p = find(name)
    if p is None:
        return OK

    exc = _uart.run(lambda: _s.run_script(name, p, g))
    if exc is None:
        return OK
    if isinstance(exc, SystemExit):
        return FORCED_EXIT
    _print_exception(exc)
    return ERROR


def _watch(supervise):
    # power_on's supervisor, in a thread: the main thread is the board's
    code = supervise()
    _s.run_hooks()
    if code == _s.EXIT_SOFT_RESET:
        _s.keep_for_soft_reset(_raw[0])
    _uart.reset(code)


def power_on(find, supervise, raw):
    """Boot as ports/esp32/main.c does, with the REPL on the serial line. Never returns."""
    global _uart
    import board_os

    sys.modules["os"] = board_os  # what mpremote's file commands need of the board's VFS
    _uart = Uart(os.getenv("ESP32SIM_REPL"))
    _raw[0] = raw
    _thread.start_new_thread(_watch, (supervise,))
    g = {"__name__": "__main__"}
    ret = _pyexec_file("boot", g, find)
    if not ret & FORCED_EXIT and not _raw[0] and ret == OK:
        ret = _pyexec_file("main", g, find)
    while not ret & FORCED_EXIT:
        ret = raw_repl(g) if _raw[0] else friendly_repl(g)
    # soft reset: the VM ends, the runner starts a fresh one that runs boot.py again
    w("MPY: soft reboot\r\n")
    _s.record_reset(5, _s.EXIT_SOFT_RESET)  # machine.SOFT_RESET
    _s.end_process(_s.EXIT_SOFT_RESET)
