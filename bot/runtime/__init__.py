"""Assembly of one process: services, worker, router + handlers, scheduler, leader election, tick wiring."""
