"""Write services of the PoC stage: queue, chain, run, record, reap."""
