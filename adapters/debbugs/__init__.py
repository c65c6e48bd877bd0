"""debbugs -> bus: SOAP poller (status snapshots) and BTS mail (real-time events)."""
