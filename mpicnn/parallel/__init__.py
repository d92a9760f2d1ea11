"""Everything that talks to MPI: process grid, communicators and parallel strategies."""
