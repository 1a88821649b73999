"""MeCab-pretokenized SentencePiece tokenizer training and HF export."""
