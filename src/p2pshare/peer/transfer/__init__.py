"""Transfer: downloads, the swarm that fetches pieces from many providers, partial files."""
