# Runs after boot.py on the board (and in the simulator): start the firmware.
from firmware import app

app.main()
