"""Plotly figure builders: data in, Figure out; no Streamlit, testable without a browser.

- :mod:`.explorer`: spectra, energy and overlap figures of the explorer pages.
- :mod:`.matrix`: heatmaps of one matrix (|W|, |W_r|, masks, where they differ).
- :mod:`.training`: loss / accuracy / churn charts and the accuracy-vs-forgetting scatter.
"""
