"""Child-process entry point of the ``sta_server`` fixture: migrate, then serve.

``python -m tests.plugins.sta_serve 127.0.0.1:PORT`` with ``DUET_STA_DB`` / ``DUET_STA_URL``
set. One process does both, so Django is imported once.
"""

from __future__ import annotations

import os
import sys


def main(addr: str) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.plugins.sta_django_settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0, interactive=False)
    call_command("runserver", addr, use_reloader=False, skip_checks=True)


if __name__ == "__main__":
    main(sys.argv[1])
