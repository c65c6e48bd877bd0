"""debbugs -> bus: SOAP poller (status snapshots) and BTS mail (real-time events);
``messages`` holds the message type of each ``debbugs.bug.<event>``."""
