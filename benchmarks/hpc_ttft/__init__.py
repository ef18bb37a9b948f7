"""HPC tier TTFT benchmark: relay streaming vs batch mode, and the dual-channel overhead."""
