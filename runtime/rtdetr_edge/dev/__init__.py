"""Development tools: the tiny RT-DETR-shaped model and its training, synthetic COCO data,
the demo (`make demo`) and the benchmark (`rtdetr-edge bench`).

Not in the container images (the Dockerfile removes this package): production pods run the
data plane and the pipeline only. The CLI says so when one of these commands is asked for
in an image.
"""
