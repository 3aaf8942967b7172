"""End users: who the end user of a request is (claims from ``identity``, ``user``,
``safety_identifier``, ``X-Tally-User``), and the directory of end users and the upstream
identifiers they have had (kept up to date as requests are recorded; search, trace).
"""
