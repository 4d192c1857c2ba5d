"""Fault injection: kill runners, fail or slow their starts, make the gateway answer fal's errors, add
latency, cut runner connections, make ``/data`` read-only or full, each bounded in time or count.

* :mod:`falemu.chaos.faults`: fault specs and the pure schedule that decides what each hits;
* :mod:`falemu.chaos.injector`: applies them through the gateway's and the controllers' hooks and
  says so in events;
* :mod:`falemu.chaos.admin`: the ``/_falemu/chaos`` admin routes ``falemu chaos`` uses;
* :mod:`falemu.chaos.client`: the test API (``falemu_app.faults``).
"""
