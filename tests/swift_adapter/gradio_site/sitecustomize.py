"""For the web UI browser test on 2 busy CI cores: gradio's ``launch()`` checks with one HEAD request, 3 seconds at
most, that its own page answers, and stops the web UI when it does not ("When localhost is not accessible, a
shareable link must be created"). gradio deep-copies the page's whole configuration on each request, and ms-swift's
(every tab's model and dataset lists) takes longer than that on a loaded machine; here the check waits 60 s."""

import sys

if sys.argv[1:2] == ["web-ui"]:
    import httpx
    from gradio import networking

    def url_ok(url: str) -> bool:
        return httpx.head(url, timeout=60).status_code == 200

    networking.url_ok = url_ok
