"""Where limit counters live: this process (``tally+memory://``), one instance's workers
(the LMDB counter file, ``tally+lmdb://``), or every instance (Redis), each running a
whole admission plan in one step.
"""
