"""`seqed serve`: translation over HTTP with cross-request dynamic batching.

The pieces, each plain Python and testable without HTTP except `app`:

* `engine`: one loaded model (seqed's own or its CTranslate2 export) behind one interface.
* `batcher`: the worker thread that owns an engine and batches what is waiting.
* `texts`: request texts to model sentences and back (lines, surrounding whitespace).
* `limits`: request limits, API keys and the one error type every route answers with.
* `metrics`: counters and histograms in Prometheus' text format.
* `service`: models, limits and batchers together: texts in, translations out.
* `app`: the FastAPI routes (seqed's API and LibreTranslate's); `server`: uvicorn with a draining SIGTERM.
"""
