"""Evaluation of students: pass@1 over k samples with the filters' own verifiers."""
