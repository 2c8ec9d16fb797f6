# Runs after boot.py on the board (and in the simulator): start the firmware, unless the flag
# file `maintenance` is there (written by `make deploy`): then start no watchdog and no servers
# and leave the board to the REPL, so nothing resets it while files are copied.
import os


def maintenance():
    try:
        os.stat('maintenance')
        return True
    except OSError:
        return False


if maintenance():
    print('maintenance boot: no watchdog, no servers; the REPL is free for mpremote.')
    print('to start the firmware: mpremote rm :maintenance + reset')
else:
    from firmware import app

    app.main()
