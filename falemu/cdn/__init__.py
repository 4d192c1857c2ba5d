"""falemu's local fal CDN: files that runners and callers upload, served back by URL.

Where each client's uploads arrive:

- the fal SDK inside a runner (``File.from_path``, ``Image.from_pil``...): fal's node-local uploader
  protocol on a unix socket mounted into every runner (``FAL_USE_LOCAL_UPLOADER=1``,
  ``FAL_API_SOCKET``), :mod:`falemu.cdn.uploader`;
- the real ``fal_client`` in a shell with ``falemu env``'s exports: its hard-coded hosts
  ``rest.fal.ai`` and ``v3.fal.media`` through falemu's proxy (``HTTPS_PROXY``), which the gateway
  answers with :mod:`falemu.cdn.rest_api` and :mod:`falemu.cdn.files_api`;
- ``fal_client`` in the same process (``falemu.testing.fal_client_routed_to``, the plugin's
  ``fal_client_emulated``): ``REST_URL``/``CDN_URL`` pointed at the gateway's ``/_falemu/rest`` and
  ``/_falemu/cdn``;
- ``@fal-ai/client``'s ``storage.upload``: ``initiate`` through its ``requestMiddleware`` or the proxy
  route (:mod:`falemu.jsproxy`), then a ``PUT`` to the ``upload_url`` falemu hands out.

Every upload lands in one :class:`~falemu.cdn.store.FileStore` (``files_dir``) and gets a URL
``<files address>/_falemu/cdn/files/<word>/<id>.<ext>`` that works from the host and from runners.
:class:`~falemu.cdn.service.CdnService` ties it together for one emulator. Nothing here is imported
by ``import falemu``.
"""
