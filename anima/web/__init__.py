"""`anima web`: a local dashboard over the same files and git history the CLI reads (DESIGN
§7a). Top floor beside cli/: it reads files and git, and writes only what the CLI writes
(inbox files, pairing decisions, dead-letter moves, an undo) through the same library calls."""
