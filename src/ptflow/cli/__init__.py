"""The `ptflow` command line: parse flags into plain values, hand them to the layers below."""
