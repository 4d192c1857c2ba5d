"""The development loop of ``falemu up --watch``: watch each app's build context, rebuild with the
layer cache, and roll the new revision out as fal does (its ``deployment_strategy``).

* :mod:`falemu.devloop.watch`: the watcher (watchfiles) with the build context's ignore rules;
* :mod:`falemu.devloop.rollout`: rolling and recreate rollouts through the scaling controller;
* :mod:`falemu.devloop.reload`: one reload of one app: config, build, rollout, events.
"""
