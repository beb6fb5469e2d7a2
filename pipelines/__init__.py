"""Apache Beam pipelines that wire the `curation` library's steps together."""
