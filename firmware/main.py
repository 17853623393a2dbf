# Board entry point: MicroPython runs main.py after boot (and after each deep sleep).
import nodeapp

nodeapp.main()
