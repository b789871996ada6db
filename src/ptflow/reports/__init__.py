"""What ptflow tells its users about data, runs and models: evaluate, predict, explore, run
history, HTML reports and the plots they draw; `tables.py` formats the plain-text tables and JSON."""
