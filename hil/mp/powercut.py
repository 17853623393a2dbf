# A flash that loses power, for proving the firmware's files survive a reset at any point.
#
# ``Flash`` replaces the firmware's file primitives (hw.file_open/file_rename/file_remove/
# fs_sync) with the same operations on the interpreter's real file system, counted: every
# byte written and every mutating operation (open for writing, flush, close, rename, remove,
# sync) is one step. Once ``arm(n)`` has been called, the step after the n-th is not done:
# a write keeps only the bytes that still fit, a rename either happened completely or not
# at all (as on LittleFS), every open file is closed as it is, and ``PowerCut`` is raised.
# The caller then "reboots": it builds the firmware's objects again from what is on flash.
#
# ``campaign`` cuts one action at every step in turn: step 0, 1, 2, ... until the action
# completes, restoring the flash before each attempt and recording what a reboot finds.
import os

import hw


class PowerCut(Exception):
    """The power went off in the middle of a flash operation."""


class _File:
    def __init__(self, flash, f):
        self.flash = flash
        self.f = f

    def write(self, data):
        n = self.flash.allow(len(data))
        if n:
            self.f.write(bytes(data[:n]))
        if n < len(data):
            self.flash.cut()
        return n

    def read(self, *args):
        return self.f.read(*args)

    def flush(self):
        self.flash.step()
        self.f.flush()

    def close(self):
        if self not in self.flash.open_files:  # closed already, or by the power cut
            return
        self.flash.open_files.remove(self)
        try:
            self.flash.step()
        finally:
            self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Flash:
    def __init__(self):
        self.budget = -1  # steps left before the power cut; -1: never
        self.steps = 0  # steps done since install
        self.open_files = []

    def arm(self, steps):
        self.budget = steps

    def allow(self, n):
        """How many of ``n`` bytes are written before the power goes (counts them)."""
        if self.budget >= 0:
            n = min(n, self.budget)
            self.budget -= n
        self.steps += n
        return n

    def step(self):
        if self.allow(1) < 1:
            self.cut()

    def cut(self):
        for f in self.open_files:
            f.f.close()
        self.open_files = []
        self.budget = 0
        raise PowerCut()

    def open(self, name, mode):
        if "r" in mode:
            return open(name, mode)
        self.step()
        f = _File(self, open(name, mode))  # noqa: SIM115 (closed by the caller or the cut)
        self.open_files.append(f)
        return f

    def rename(self, old, new):
        self.step()
        os.rename(old, new)

    def remove(self, name):
        self.step()
        os.remove(name)

    def sync(self):
        self.step()


_saved = {}


def install(flash):
    _saved.update(file_open=hw.file_open, file_rename=hw.file_rename,
                  file_remove=hw.file_remove, fs_sync=hw.fs_sync)
    hw.file_open = flash.open
    hw.file_rename = flash.rename
    hw.file_remove = flash.remove
    hw.fs_sync = flash.sync


def uninstall():
    if _saved:
        hw.file_open = _saved["file_open"]
        hw.file_rename = _saved["file_rename"]
        hw.file_remove = _saved["file_remove"]
        hw.fs_sync = _saved["fs_sync"]
        _saved.clear()


def snapshot():
    """Every file in the current directory (the emulated flash) and its bytes."""
    files = {}
    for name in os.listdir():
        with open(name, "rb") as f:
            files[name] = f.read()
    return files


def restore(files):
    for name in os.listdir():
        os.remove(name)
    for name in files:
        with open(name, "wb") as f:
            f.write(files[name])


def campaign(start, action, reboot, limit=100000):
    """Cut ``action(start())`` after 0, 1, 2, ... steps until it completes.

    ``start`` runs with a healthy flash (e.g. boots the node); ``action`` runs with the power
    cut armed; ``reboot`` runs after the cut with a healthy flash again and returns what a
    new boot finds. Returns one (steps, cut, found) per attempt, the last one uncut.
    """
    before = snapshot()
    results = []
    for steps in range(limit):
        restore(before)
        flash = Flash()
        install(flash)
        cut = False
        try:
            state = start()
            flash.arm(steps)
            action(state)
        except PowerCut:
            cut = True
        finally:
            uninstall()
        results.append((steps, cut, reboot()))
        if not cut:
            break
    restore(before)
    return results
