# Simulator stand-in for the ESP32 port's `network` module (runs inside the MicroPython
# unix VM). The radio environment ("air") comes from $ESP32SIM/air.json; the device's own
# interfaces are recorded in $ESP32SIM/wlan.json. All sim sockets are loopback.
# See docs/simulator.md.
import time

import simstate as _s
from mpy_api import version as _v   # SIM_MICROPYTHON: this release's API set

STA_IF = 0
AP_IF = 1

MODE_11B = 1
MODE_11G = 2
MODE_11N = 4
MODE_LR = 8

AUTH_OPEN = 0
AUTH_WEP = 1
AUTH_WPA_PSK = 2
AUTH_WPA2_PSK = 3
AUTH_WPA_WPA2_PSK = 4
AUTH_WPA2_ENTERPRISE = 5
AUTH_WPA3_PSK = 6
AUTH_WPA2_WPA3_PSK = 7
AUTH_WAPI_PSK = 8
AUTH_OWE = 9
if _v >= (1, 24):   # built with ESP-IDF 5.2 (1.21: 5.0, without these)
    AUTH_WPA3_ENT_192 = 10
    AUTH_WPA3_EXT_PSK = 11
    AUTH_WPA3_EXT_PSK_MIXED_MODE = 12
AUTH_MAX = 13

STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_BEACON_TIMEOUT = 200
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202
STAT_ASSOC_FAIL = 203
if _v >= (1, 25):   # beabef5aac, v1.25
    STAT_CONNECT_FAIL = 203
STAT_HANDSHAKE_TIMEOUT = 204
if _v >= (1, 24):   # ESP-IDF 5.2
    STAT_NO_AP_FOUND_IN_RSSI_THRESHOLD = 211
    STAT_NO_AP_FOUND_IN_AUTHMODE_THRESHOLD = 212
    STAT_NO_AP_FOUND_W_COMPATIBLE_SECURITY = 210
_ASSOC_LEAVE = 8

_hostname = ["mpy-esp32"]
_country = ["XX"]
_BASE_MAC = b"\x24\x0a\xc4\x5e\x11\x20"
_macs = [_BASE_MAC, _BASE_MAC[:5] + bytes((_BASE_MAC[5] + 1,))]
_air = None


def _mac(if_id):
    return _macs[if_id]


def _air_data():
    global _air
    if _air is None:
        _air = _s.Watched("air.json", {"aps": [], "connect_delay_ms": 500})
    return _air.get()


def _find_ap(ssid):
    for ap in _air_data().get("aps", ()):
        if ap.get("ssid") == ssid and ap.get("up", True):
            return ap
    return None


def _ap_security(ap):
    sec = ap.get("security")
    if sec is None:
        sec = AUTH_WPA2_PSK if ap.get("password") else AUTH_OPEN
    return sec


def _bssid(ap):
    b = ap.get("bssid")
    if b:
        return bytes(int(x, 16) for x in b.split(":"))
    h = 0
    for c in ap.get("ssid", ""):
        h = (h * 31 + ord(c)) & 0xFFFFFF
    return bytes((0x02, 0x11, 0x22, (h >> 16) & 255, (h >> 8) & 255, h & 255))


def hostname(name=None):
    if name is None:
        return _hostname[0]
    if len(name) > 32:
        raise ValueError("hostname too long")
    _hostname[0] = name
    _record()


def country(code=None):
    if code is None:
        return _country[0]
    if len(code) != 2:
        raise ValueError()
    _country[0] = code


if _v >= (1, 24):   # network.ipconfig() and WLAN.ipconfig() arrived in 1.24; before: ifconfig()
    def ipconfig(*args, **kw):
        if kw:
            return None
        if len(args) == 1:
            if args[0] == "dns":
                return "127.0.0.1"
            if args[0] == "prefer":
                return 4
        raise ValueError("unexpected key")


def phy_mode(mode=None):
    if mode is None:
        return MODE_11B | MODE_11G | MODE_11N


_objs = [None, None]


def _record():
    sta = _objs[0]
    ap = _objs[1]
    d = {"hostname": _hostname[0]}
    if sta is not None:
        d["sta"] = {"active": sta._active, "connected": sta._connected,
                    "ssid": sta._ssid, "status": sta._status_code()}
    if ap is not None:
        d["ap"] = {"active": ap._active, "ssid": ap._cfg["ssid"],
                   "security": ap._cfg["security"], "key": ap._cfg["key"],
                   "channel": ap._cfg["channel"], "hidden": ap._cfg["hidden"],
                   "max_clients": ap._cfg["max_clients"]}
    try:
        _s.write_json(_s.path("wlan.json"), d)
    except OSError:
        pass


class WLAN:
    PM_NONE = 0
    PM_PERFORMANCE = 1
    PM_POWERSAVE = 2
    if _v >= (1, 24):   # the class constants arrived with ipconfig()
        IF_STA = 0
        IF_AP = 1
        SEC_OPEN = 0
        SEC_WEP = 1
        SEC_WPA = 2
        SEC_WPA2 = 3
        SEC_WPA_WPA2 = 4
        SEC_WPA2_ENT = 5
        SEC_WPA3 = 6
        SEC_WPA2_WPA3 = 7
        SEC_WAPI = 8
        SEC_OWE = 9

    def __new__(cls, interface=0):
        if interface not in (0, 1):
            raise ValueError("invalid WLAN interface identifier")
        o = _objs[interface]
        if o is None:
            o = object.__new__(cls)
            o._init(interface)
            _objs[interface] = o
        return o

    def __init__(self, interface=0):
        pass

    def _init(self, if_id):
        self._if = if_id
        self._active = False
        # STA state
        self._ssid = ""
        self._key = ""
        self._requested = False   # connect requested (the driver keeps reconnecting)
        self._connected = False
        self._reason = 0          # last disconnect reason (0 = none)
        self._phase = None        # None, "connecting", "retry"
        self._t = 0               # ticks when the current attempt resolves
        self._cur_ap = None
        self._reconnects = 0      # config('reconnects'): 0 = forever
        self._attempts = 0
        m = _macs[1]
        self._cfg = {"ssid": "ESP_%02X%02X%02X" % (m[3], m[4], m[5]), "key": "",
                     "security": AUTH_OPEN, "channel": 1, "hidden": False,
                     "max_clients": 10}
        self._pm = 1
        self._txpower = 20.0
        self._protocol = MODE_11B | MODE_11G | MODE_11N
        self._ip = None

    def __repr__(self):
        return "<WLAN>"

    # -- state machine, advanced lazily whenever the firmware looks -------------------
    def _delay(self):
        return int(_air_data().get("connect_delay_ms", 500))

    def _update(self):
        if self._if != 0 or not self._active:
            return
        changed = False
        now = time.ticks_ms()
        if self._connected:
            ap = _find_ap(self._ssid)
            if ap is None or ap.get("password", "") != self._key:
                # AP gone (or its key changed): beacon timeout, the driver retries
                self._connected = False
                self._reason = STAT_BEACON_TIMEOUT
                self._phase = "retry"
                self._t = time.ticks_add(now, max(self._delay(), 1000))
                print("sim: wifi disconnected, reason:200:beacon timeout")
                changed = True
        elif self._phase is not None and time.ticks_diff(now, self._t) >= 0:
            ap = _find_ap(self._ssid)
            changed = True
            if ap is None:
                self._reason = STAT_NO_AP_FOUND
            elif _ap_security(ap) != AUTH_OPEN and ap.get("password", "") != self._key:
                self._reason = STAT_WRONG_PASSWORD
            else:
                self._connected = True
                self._reason = 0
                self._phase = None
                self._cur_ap = ap
                print("sim: wifi connected to %r" % self._ssid)
            if not self._connected:
                self._attempts += 1
                if self._reconnects and self._attempts >= self._reconnects:
                    self._phase = None
                    self._requested = False
                else:
                    # the ESP32 port reconnects forever by default
                    self._phase = "retry"
                    self._t = time.ticks_add(now, max(self._delay(), 1000))
        if changed:
            _record()

    def _status_code(self):
        if self._if != 0:
            return None
        if self._connected:
            return STAT_GOT_IP
        r = self._reason
        if _v < (1, 22):
            # before d6154925d5 (v1.22) a failing AP reads "connecting" while the driver
            # retries, and disconnect() leaves the reason (8, ASSOC_LEAVE) as the status
            if self._requested:
                return STAT_CONNECTING
            return STAT_IDLE if r == 0 else r
        if r in (STAT_NO_AP_FOUND, STAT_WRONG_PASSWORD):
            return r
        if r == _ASSOC_LEAVE:
            return STAT_IDLE
        if self._requested:
            return STAT_CONNECTING
        if r == 0:
            return STAT_IDLE
        return r

    # -- API ----------------------------------------------------------------------------
    def active(self, *args):
        if args:
            a = bool(args[0])
            if a != self._active:
                self._active = a
                if not a and self._if == 0:
                    self._connected = False
                    self._requested = False
                    self._phase = None
                    self._reason = _ASSOC_LEAVE if self._reason == 0 else self._reason
                _record()
        return self._active

    def connect(self, ssid=None, key=None, *, bssid=None):
        if self._if != 0:
            # esp_wifi_connect() on an AP-only radio
            raise OSError("Wifi Invalid Mode")
        if not self._active:
            raise OSError("Wifi Not Started")
        if bssid is not None and len(bssid) != 6:
            raise ValueError()
        self._update()
        if self._phase == "connecting":
            raise OSError("Wifi Internal Error")
        if ssid is not None:
            self._ssid = ssid if isinstance(ssid, str) else ssid.decode()
            self._ssid = self._ssid[:32]
            self._key = "" if key is None else (key if isinstance(key, str) else key.decode())
        self._connected = False
        self._requested = True
        self._attempts = 0
        self._phase = "connecting"
        self._t = time.ticks_add(time.ticks_ms(), self._delay())
        _record()

    def disconnect(self):
        if not self._active:
            raise OSError("Wifi Not Started")
        was = self._connected or self._phase is not None
        self._requested = False
        self._connected = False
        self._phase = None
        if was:
            self._reason = _ASSOC_LEAVE
        _record()

    def isconnected(self):
        if self._if != 0:
            return self._active and int(_air_data().get("ap_clients", 0)) > 0
        self._update()
        return self._connected

    def status(self, *args):
        if not args:
            if self._if != 0:
                return None
            self._update()
            return self._status_code()
        param = args[0]
        if param == "rssi":
            if self._if != 0:
                raise OSError("STA required")
            self._update()
            if not self._connected:
                raise OSError("Wifi Not Connected")
            ap = _find_ap(self._ssid) or self._cur_ap or {}
            return int(ap.get("rssi", -60))
        if param == "stations":
            if self._if != 1:
                raise OSError("AP required")
            n = int(_air_data().get("ap_clients", 0)) if self._active else 0
            if _v < (1, 29):   # the stations' IP addresses since 2f16bf430a
                return [(bytes((0x02, 0, 0, 0, 0, i + 2)),) for i in range(n)]
            return [(bytes((0x02, 0, 0, 0, 0, i + 2)), "127.0.0.1") for i in range(n)]
        raise ValueError("unknown status param")

    def scan(self):
        if not (self._if == 0 and self._active):
            raise OSError("STA must be active")
        air = _air_data()
        ms = int(air.get("scan_ms", 1500))
        if ms > 0:
            time.sleep_ms(ms)  # a real scan blocks the VM for 1.5-2.5 s
        out = []
        for ap in air.get("aps", ()):
            if ap.get("up", True):
                out.append((ap.get("ssid", "").encode(), _bssid(ap), int(ap.get("channel", 1)),
                            int(ap.get("rssi", -60)), _ap_security(ap),
                            False))
        self._update()
        return out

    def config(self, *args, **kw):
        if args and kw:
            raise TypeError("either pos or kw args are allowed")
        if kw:
            return self._config_set(kw)
        if len(args) != 1:
            raise TypeError("can query only one param")
        return self._config_get(args[0])

    def _require(self, if_id):
        if self._if != if_id:
            raise OSError("STA required" if if_id == 0 else "AP required")

    def _config_set(self, kw):
        cfg = dict(self._cfg)
        req = -1
        for k, v in kw.items():
            if k == "mac":
                if len(v) != 6:
                    raise ValueError("invalid buffer length")
                _macs[self._if] = bytes(v)
            elif k in ("ssid", "essid"):
                req = 1
                cfg["ssid"] = (v if isinstance(v, str) else v.decode())[:32]
            elif k == "hidden":
                req = 1
                cfg["hidden"] = bool(v)
            elif k in ("security", "authmode"):
                req = 1
                cfg["security"] = int(v)
            elif k in ("key", "password"):
                req = 1
                cfg["key"] = (v if isinstance(v, str) else v.decode())[:63]
            elif k == "channel":
                cfg["channel"] = int(v)
            elif k in ("hostname", "dhcp_hostname"):
                hostname(v)
            elif k == "max_clients":
                req = 1
                cfg["max_clients"] = int(v)
            elif k == "reconnects":
                req = 0
                v = int(v)
                self._reconnects = 0 if v == -1 else v + 1
            elif k == "txpower":
                self._txpower = float(v)
            elif k == "protocol":
                self._protocol = int(v)
            elif k == "pm":
                self._pm = int(v)
            elif k == "bandwidth":
                pass
            else:
                raise ValueError("unknown config param")
            if req >= 0:
                self._require(req)
        if self._if == 1:
            if cfg["security"] != AUTH_OPEN and len(cfg["key"]) < 8:
                # esp_wifi_set_config(): ESP_ERR_WIFI_PASSWORD
                raise OSError("Wifi Invalid Password")
            if not 1 <= cfg["channel"] <= 13:
                raise OSError("Wifi Invalid Argument")
        self._cfg = cfg
        _record()

    def _config_get(self, k):
        if k == "mac":
            return _macs[self._if]
        if k in ("ssid", "essid"):
            return self._ssid if self._if == 0 else self._cfg["ssid"]
        if k == "hidden":
            self._require(1)
            return self._cfg["hidden"]
        if k in ("security", "authmode"):
            self._require(1)
            return self._cfg["security"]
        if k == "channel":
            if self._if == 0:
                self._update()
                if self._connected:
                    ap = _find_ap(self._ssid) or self._cur_ap or {}
                    return int(ap.get("channel", 1))
            return self._cfg["channel"]
        if k in ("hostname", "dhcp_hostname"):
            self._require(0)
            return _hostname[0]
        if k == "max_clients":
            return self._cfg["max_clients"]
        if k == "reconnects":
            self._require(0)
            return self._reconnects - 1
        if k == "txpower":
            return self._txpower
        if k == "protocol":
            return self._protocol
        if k == "pm":
            return self._pm
        if k == "ifname":
            return "st1" if self._if == 0 else "ap1"
        raise ValueError("unknown config param")

    def _up(self):
        if self._if == 0:
            self._update()
            return self._connected
        return self._active

    def _ipconfig(self, *args, **kw):
        if kw:
            for k in kw:
                if k not in ("addr4", "gw4", "dhcp4", "autoconf6", "addr6"):
                    raise ValueError("unexpected key")
            return None
        if len(args) != 1:
            raise TypeError("can query only one param")
        k = args[0]
        up = self._up()
        if k == "addr4":
            return ("127.0.0.1", "255.0.0.0") if up else ("0.0.0.0", "0.0.0.0")
        if k == "gw4":
            return "127.0.0.1" if up else "0.0.0.0"
        if k == "dhcp4":
            return self._if == 0
        if k == "has_dhcp4":
            return self._if == 0 and up
        if k == "addr6":
            return []
        if k in ("autoconf6", "has_autoconf6"):
            return False
        raise ValueError("unexpected key")

    if _v >= (1, 24):   # before: ifconfig() only
        ipconfig = _ipconfig

    def ifconfig(self, *args):
        if args:
            return None
        if self._up():
            return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")
        return ("0.0.0.0", "0.0.0.0", "0.0.0.0", "0.0.0.0")
