"""`make bench`: the chat stream's throughput, burst and latency against a bare Django baseline (issue 9)."""
