"""Model architectures: the family table, loading base models and tokenizers, bert2bert."""
