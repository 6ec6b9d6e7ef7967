"""Simulators: the processes, scenes and scripted experts that demonstrations and evaluation share."""
