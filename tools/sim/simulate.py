#!/usr/bin/env python3
"""Run the firmware on the MicroPython unix VM as a simulated ESP32-CAM board.

    python tools/sim/simulate.py --flash DIR [--config FILE] [--heapsize 256K] [--frames DIR]
                             [--mpy] [--once] [--max-sleep S] [--quiet] [--no-repl] [--from-flash]

The flash directory is the board's filesystem root and the VM's cwd; its `.sim/`
subdirectory holds the simulator's control files (docs/simulator.md). The VM runs
tools/sim/board/power_on.py, which imports boot then main. On exit code 20 (machine.reset), 22
(watchdog) or 23 (soft_reset) the board restarts at once; on 21 (deepsleep) after the
recorded sleep (capped by --max-sleep); on 0 or anything else it stops. Ctrl-C stops it.
The board's serial port, with MicroPython's REPL on it, is a pty (its path is printed) that
mpremote connects to (tools/sim/board/repl.py).

Importable: `Board` (a test fixture), `write_control()`, `read_control()`.
"""
import argparse
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tty

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SIM = os.path.join(REPO, "tools", "sim", "board")

EXIT_RESET = 20
EXIT_DEEPSLEEP = 21
EXIT_WDT = 22
EXIT_SOFT_RESET = 23
RESTART_CODES = (EXIT_RESET, EXIT_WDT, EXIT_SOFT_RESET, EXIT_DEEPSLEEP)

PWRON_RESET, HARD_RESET, WDT_RESET, DEEPSLEEP_RESET, SOFT_RESET = 1, 2, 3, 4, 5
_DEFAULT_CAUSE = {EXIT_RESET: HARD_RESET, EXIT_DEEPSLEEP: DEEPSLEEP_RESET,
                  EXIT_WDT: WDT_RESET, EXIT_SOFT_RESET: SOFT_RESET}
DEFAULT_PORTS = {"control_port": 8000, "stream_port": 8001, "admin_port": 8080}


def micropython_bin():
    p = os.path.join(REPO, ".venv", "bin", "micropython")
    if os.path.exists(p):
        return p
    p = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.path.exists(p):
        return p
    return shutil.which("micropython") or "micropython"


def _die_with_parent():
    # Linux: the VM gets SIGKILL if the runner dies, so no orphan VM keeps the ports.
    try:
        import ctypes
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def write_control(sim_dir, name, data):
    """Atomically write control file `name` (e.g. "camera.json") into `sim_dir`."""
    os.makedirs(sim_dir, exist_ok=True)
    p = os.path.join(sim_dir, name)
    tmp = "%s.%d.tmp" % (p, os.getpid())
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, p)


def read_control(sim_dir, name, default=None):
    try:
        with open(os.path.join(sim_dir, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def config_ports(flash):
    """(control, stream, admin) ports from <flash>/config.json (sim defaults otherwise)."""
    cfg = read_control(flash, "config.json", {}) or {}
    http = cfg.get("http", {}) if isinstance(cfg, dict) else {}
    return tuple(int(http.get(k, v)) for k, v in DEFAULT_PORTS.items())


def port_open(port, host="127.0.0.1"):
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


class Board:
    """A simulated board: the VM plus the restart loop (in a thread).

    board = Board(flash, config=None, heapsize=None, mpy=False, env=None)
    board.start(); board.wait_ready(timeout=10); ...; board.stop()

    Attributes: boots, last_exit_code, exit_codes, causes (reset cause of each boot),
    sim_dir, log_path (<flash>/console.log, every VM's output). Restarts as the CLI does,
    unless once=True."""

    def __init__(self, flash, config=None, heapsize=None, mpy=False, env=None, frames=None,
                 echo=False, once=False, max_sleep=10.0, log_path=None, argv=None,
                 micropython=None, repl=None):
        self.flash = os.path.abspath(flash)
        # the MicroPython release whose ESP32 API set the stand-ins expose (None: the
        # environment's SIM_MICROPYTHON, else 1.29); the VM refuses an unsupported one
        self.micropython = micropython
        self.config = config
        self.heapsize = heapsize
        self.mpy = mpy
        self.extra_env = dict(env or {})
        self.frames = frames
        self.echo = echo
        self.once = once
        self.max_sleep = max_sleep
        self.sim_dir = os.path.join(self.flash, ".sim")
        self.log_path = log_path or os.path.join(self.flash, "console.log")
        self.argv = argv  # override of the script run by the VM (default power_on.py)
        self.boots = 0
        self.last_exit_code = None
        self.exit_codes = []
        self.causes = []
        self.proc = None
        self._stopping = False
        self._thread = None
        self._lock = threading.Lock()
        self._next_cause = PWRON_RESET
        self._cond = threading.Condition()
        self._log = None
        self._forced = None
        self.on_ready = None  # callback(board) when ports open after a boot (CLI prints)
        # The board's serial port (its UART with the REPL) as a pty: repl=True, or SIM_REPL in
        # env. repl_path is what mpremote connects to; it stays the same through resets.
        self.repl = bool(self.extra_env.get("SIM_REPL")) if repl is None else bool(repl)
        self.repl_path = None
        self.interrupts = 0  # Ctrl-Cs that interrupted running code (KeyboardInterrupt)
        self._pty = None
        self._tx_lost = False
        self._tx_cr = False

    # -- setup ---------------------------------------------------------------------------
    def prepare(self):
        os.makedirs(self.sim_dir, exist_ok=True)
        cfg_dst = os.path.join(self.flash, "config.json")
        if not os.path.exists(cfg_dst):
            src = self.config or os.path.join(SIM, "config.sim.json")
            if not os.path.exists(src):
                raise FileNotFoundError(
                    "no %s and no config to copy (%s): create config.json in the flash dir"
                    % (cfg_dst, src))
            shutil.copyfile(src, cfg_dst)
        air = os.path.join(self.sim_dir, "air.json")
        if not os.path.exists(air):
            write_control(self.sim_dir, "air.json", default_air(cfg_dst))

    def env(self):
        e = dict(os.environ)
        if self.mpy:
            # mpy=True: build/x64 (make build); a path: that precompiled tree
            tree = self.mpy if isinstance(self.mpy, str) else os.path.join(REPO, "build", "x64")
            path = [SIM, ".frozen", os.path.join(tree, "lib"), tree]
        else:
            path = [SIM, ".frozen", os.path.join(REPO, "lib"), REPO]
        e["MICROPYPATH"] = ":".join(path)
        e["ESP32SIM"] = self.sim_dir
        if self.frames:
            e["SIMFRAMES"] = os.path.abspath(self.frames)
        # SIM_CAMERA=class (from the environment or env=): power_on.py puts the class-API
        # camera stand-in (tools/sim/board_class) first
        if self.micropython:
            e["SIM_MICROPYTHON"] = self.micropython
        e.update(self.extra_env)
        return e

    def command(self):
        cmd = [micropython_bin()]
        if self.heapsize:
            cmd += ["-X", "heapsize=%s" % self.heapsize]
        cmd += self.argv or [os.path.join(SIM, "power_on.py")]
        return cmd

    # -- run -----------------------------------------------------------------------------
    def start(self):
        self.prepare()
        self._stopping = False
        self._next_cause = PWRON_RESET
        self._remove_cause_file()
        self._log = open(self.log_path, "ab", buffering=0)
        if self.repl and self._pty is None:
            self._open_port()
        self._thread = threading.Thread(target=self._loop, name="board", daemon=True)
        self._thread.start()
        return self

    def _remove_cause_file(self):
        try:
            os.remove(os.path.join(self.sim_dir, "reset_cause"))
        except OSError:
            pass

    def _emit(self, data):
        if self._log:
            try:
                self._log.write(data)
            except ValueError:
                pass
        if self.echo:
            try:
                sys.stdout.buffer.write(data)
                sys.stdout.flush()
            except (OSError, ValueError):
                pass

    def _loop(self):
        while not self._stopping:
            env = self.env()
            env["ESP32SIM_RESET_CAUSE"] = str(self._next_cause)
            self._remove_cause_file()
            with self._cond:
                self.boots += 1
                self.causes.append(self._next_cause)
                self._cond.notify_all()
            self._emit(b"--- sim: boot %d (reset cause %d) ---\n" % (self.boots, self._next_cause))
            stdin = subprocess.DEVNULL
            if self.repl:
                # the UART's receive line: the VM polls it and takes what came (non-blocking)
                stdin, rx = os.pipe()
                os.set_blocking(stdin, False)
                os.set_blocking(rx, False)  # a VM that stops reading loses bytes, never blocks us
                # the board line: the VM asks for a Ctrl-C interrupt or a reset on it (repl.py)
                line_r, line_w = os.pipe()
                env["ESP32SIM_REPL"] = str(line_w)
            proc = subprocess.Popen(self.command(), cwd=self.flash, env=env, stdin=stdin,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, bufsize=0,
                                    pass_fds=(line_w,) if self.repl else (),
                                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)
            proc.sim_exit = None
            proc.uart_rx = None
            if self.repl:
                os.close(stdin)
                os.close(line_w)
                proc.uart_rx = rx
                threading.Thread(target=self._board_line, args=(proc, line_r), daemon=True).start()
            with self._lock:
                self.proc = proc
            if self.on_ready:
                threading.Thread(target=self._watch_ready, args=(proc,), daemon=True).start()
            out = proc.stdout.fileno()
            while True:
                data = os.read(out, 65536)
                if not data:
                    break
                self._emit(data)
                if self.repl:
                    self._uart_tx(data)
            code = proc.wait()
            proc.stdout.close()
            if proc.uart_rx is not None:
                with self._lock:
                    rx, proc.uart_rx = proc.uart_rx, None
                os.close(rx)
            rec = read_control(self.sim_dir, "reset_cause", None) or {}
            forced, self._forced = self._forced, None
            if forced:
                rec = {"cause": forced}
                code = EXIT_RESET
            elif proc.sim_exit is not None:
                code = proc.sim_exit  # a reset the VM asked for on the board line
            elif code < 0 and rec.get("exit_code") == EXIT_WDT:
                code = EXIT_WDT  # killed by the fallback watchdog thread
            with self._cond:
                self.last_exit_code = code
                self.exit_codes.append(code)
                self._cond.notify_all()
            self._emit(b"--- sim: VM exited with code %d ---\n" % code)
            if self._stopping or self.once or code not in RESTART_CODES:
                break
            self._next_cause = rec.get("cause") or _DEFAULT_CAUSE[code]
            if code == EXIT_DEEPSLEEP:
                ms = rec.get("sleep_ms", -1)
                s = self.max_sleep if ms is None or ms < 0 else min(ms / 1000.0, self.max_sleep)
                self._emit(b"--- sim: deep sleep %.1f s ---\n" % s)
                t_end = time.time() + s
                while not self._stopping and time.time() < t_end:
                    time.sleep(0.02)
        with self._lock:
            self.proc = None
        with self._cond:
            self._cond.notify_all()

    # -- the serial port ---------------------------------------------------------------------
    def _open_port(self):
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line editing: bytes pass as on a UART
        os.set_blocking(master, False)
        self._pty = (master, slave)  # the runner keeps the slave open: reads never see EOF
        self.repl_path = os.ttyname(slave)
        self._rx_thread = threading.Thread(target=self._uart_rx, args=(master,), daemon=True)
        self._rx_thread.start()

    def _close_port(self):
        pty, self._pty = self._pty, None
        if pty:
            self._rx_thread.join(2)  # it must not read a descriptor number reused after close
            for fd in pty:
                try:
                    os.close(fd)
                except OSError:
                    pass

    def _uart_rx(self, master):
        # bytes from mpremote to the VM's stdin; while the board resets they are lost
        while self._pty and self._pty[0] == master:
            try:
                if not select.select([master], [], [], 0.2)[0]:
                    continue
                data = os.read(master, 4096)
            except OSError:
                time.sleep(0.05)
                continue
            with self._lock:
                p = self.proc
                rx = p.uart_rx if p else None
                if rx is not None:
                    try:
                        os.write(rx, data)
                    except OSError:
                        pass

    def _uart_tx(self, data):
        # The board's stdout ends lines with \r\n (mp_hal_stdout_tx_strn_cooked); the VM's with \n
        if self._tx_cr and data.startswith(b"\n"):
            head, data = b"\n", data[1:]
        else:
            head = b""
        self._tx_cr = data.endswith(b"\r")
        data = head + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
        pty = self._pty
        if not pty:
            return
        while data:
            try:
                n = os.write(pty[0], data)
                data = data[n:]
                self._tx_lost = False
            except BlockingIOError:
                # nobody reads the port: what the board sends meanwhile is lost, as on a UART
                if not select.select([], [pty[0]], [], 0 if self._tx_lost else 0.5)[1]:
                    self._tx_lost = True
                    return
            except OSError:
                return

    def _board_line(self, proc, fd):
        with os.fdopen(fd, "rb", buffering=0) as line:
            while True:
                b = line.read(1)
                if not b:
                    return
                if b == b"\x03":  # Ctrl-C while code runs: KeyboardInterrupt in the VM's main thread
                    self.interrupts += 1
                    self._signal(proc, signal.SIGINT)
                elif b == b"R":  # a reset: the VM ends at once, with this exit code
                    code = line.read(1)
                    proc.sim_exit = code[0] if code else EXIT_RESET
                    self._signal(proc, signal.SIGKILL)

    @staticmethod
    def _signal(proc, sig):
        try:
            if proc.poll() is None:
                proc.send_signal(sig)
        except OSError:
            pass

    def _watch_ready(self, proc):
        ports = config_ports(self.flash)
        while proc.poll() is None and not self._stopping:
            if all(port_open(p) for p in ports):
                try:
                    self.on_ready(self)
                except Exception:
                    pass
                return
            time.sleep(0.1)

    # -- control -------------------------------------------------------------------------
    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    @property
    def pid(self):
        p = self.proc
        return p.pid if p else None

    def _kill_vm(self, timeout=2.0):
        with self._lock:
            p = self.proc
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout)
        except OSError:
            pass

    def stop(self, timeout=5.0):
        """Power off: kill the VM, end the restart loop."""
        self._stopping = True
        self._kill_vm()
        if self._thread:
            self._thread.join(timeout)
        if self._log:
            self._log.close()
            self._log = None
        self._close_port()
        return self.last_exit_code

    def hard_reset(self):
        """Press the reset button: the VM is killed and boots with HARD_RESET."""
        self._reset_with(HARD_RESET)

    def power_cycle(self):
        self._reset_with(PWRON_RESET)

    def _reset_with(self, cause):
        with self._lock:
            p = self.proc
            if p and p.poll() is None:
                # the loop sees the kill and restarts with this cause
                self._forced = cause
                p.kill()

    def wait_for(self, pred, timeout=10.0):
        """Wait until pred(board) is true; returns its value or False on timeout."""
        end = time.time() + timeout
        with self._cond:
            while True:
                v = pred(self)
                if v:
                    return v
                left = end - time.time()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))

    def wait_boots(self, n, timeout=10.0):
        return self.wait_for(lambda b: b.boots >= n, timeout)

    def wait_exit(self, timeout=10.0):
        """Wait until the restart loop ends (VM stopped for good)."""
        if self._thread:
            self._thread.join(timeout)
        return not self.running

    def wait_ready(self, ports=None, timeout=10.0):
        """Wait until every port (default: the three from config.json) accepts TCP."""
        ports = ports or config_ports(self.flash)
        end = time.time() + timeout
        while time.time() < end:
            if all(port_open(p) for p in ports):
                return True
            if not self.running:
                return False
            time.sleep(0.05)
        return False

    def control(self, name, **keys):
        """Update keys of control file `name` ("camera", "air", ...) atomically."""
        fn = name if name.endswith(".json") else name + ".json"
        d = read_control(self.sim_dir, fn, {}) or {}
        d.update(keys)
        write_control(self.sim_dir, fn, d)
        return d

    def read(self, name, default=None):
        fn = name if "." in name else name + ".json"
        return read_control(self.sim_dir, fn, default)

    def console(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def default_air(config_path):
    """An air.json with the upstream networks of config.json up (sim convenience)."""
    aps = []
    try:
        with open(config_path) as f:
            cfg = json.load(f)
        for i, up in enumerate(cfg.get("wifi", {}).get("upstream", [])):
            if up.get("ssid"):
                aps.append({"ssid": up["ssid"], "password": up.get("password", ""),
                            "rssi": -55 - 7 * i, "up": True, "channel": 1 + 5 * i % 13})
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    if not aps:
        aps = [{"ssid": "home", "password": "secret123", "rssi": -60, "up": True, "channel": 6}]
    return {"aps": aps, "connect_delay_ms": 500}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--flash", required=True, help="simulated flash dir (VM cwd)")
    ap.add_argument("--config", help="config.json to copy into a flash dir without one")
    ap.add_argument("--heapsize", default=os.environ.get("SIM_HEAPSIZE", ""),
                    help="VM heap, e.g. 256K (default: $SIM_HEAPSIZE, else the VM's ~2 MB)")
    ap.add_argument("--frames", help="frames dir (default <repo>/sim/frames)")
    ap.add_argument("--mpy", action="store_true", help="run the compiled build/ tree")
    ap.add_argument("--once", action="store_true", help="never restart the VM")
    ap.add_argument("--max-sleep", type=float, default=10.0,
                    help="cap of a deep sleep in seconds (default 10)")
    ap.add_argument("--quiet", action="store_true", help="do not echo the console")
    ap.add_argument("--no-repl", action="store_true",
                    help="no serial port (by default the board's REPL is on a pty for mpremote)")
    ap.add_argument("--from-flash", action="store_true",
                    help="run boot.py, main.py, firmware/ and lib/ from the flash dir, as a board "
                         "does (what tools/build/deploy.py --build build/x64 copies there)")
    ap.add_argument("--ntp", type=int, default=12300,
                    help="port of the fake NTP server started beside the board, on 127.0.0.1 "
                         "(config.sim.json's time.servers; 0: none, the clock stays unset)")
    ap.add_argument("--micropython", default=os.environ.get("SIM_MICROPYTHON", ""),
                    help="API set of this MicroPython release: 1.21, 1.24 or 1.29 (default: "
                         "$SIM_MICROPYTHON, else 1.29)")
    a = ap.parse_args(argv)

    board = Board(a.flash, config=a.config,
                  heapsize=None if a.heapsize in ("0", "") else a.heapsize,
                  mpy=a.mpy, frames=a.frames, echo=not a.quiet, once=a.once,
                  max_sleep=a.max_sleep, micropython=a.micropython or None, repl=not a.no_repl,
                  env={"MICROPYPATH": SIM + ":.:.frozen:lib"} if a.from_flash else None)
    try:
        board.prepare()
    except FileNotFoundError as e:
        print("simulate: %s" % e, file=sys.stderr)
        return 2

    def ready(b):
        c, s, adm = config_ports(b.flash)
        print("sim: ready (boot %d): control http://127.0.0.1:%d/  stream http://127.0.0.1:%d/"
              "  admin http://127.0.0.1:%d/" % (b.boots, c, s, adm), flush=True)

    board.on_ready = ready

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    print("sim: flash %s, console log %s, control files %s" % (board.flash, board.log_path,
                                                                board.sim_dir), flush=True)
    ntp = None
    if a.ntp:
        # the board's clock starts at 2000-01-01; this sets it without asking the Internet
        ntp = subprocess.Popen([sys.executable, os.path.join(REPO, "tools", "peers", "fake_ntp.py"),
                                "--port", str(a.ntp)],
                               preexec_fn=_die_with_parent if sys.platform == "linux" else None)
    board.start()
    if board.repl_path:
        # one write of the whole line: the console's reader thread writes beside it
        sys.stdout.flush()
        sys.stdout.buffer.write(b"sim: serial port %s (the board's REPL): mpremote connect %s, "
                                b"make deploy PORT=%s\n" % ((board.repl_path.encode(),) * 3))
        sys.stdout.buffer.flush()
    try:
        while board.running:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("\nsim: stopping", flush=True)
        board.stop()
        return 0
    finally:
        if ntp:
            ntp.terminate()
            ntp.wait(5)
    board.stop()
    code = board.last_exit_code
    print("sim: stopped (exit code %s after %d boot(s))" % (code, board.boots), flush=True)
    return code if isinstance(code, int) and 0 < code < 128 else 0


if __name__ == "__main__":
    sys.exit(main())
