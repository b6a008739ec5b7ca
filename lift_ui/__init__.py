"""LIFT Studio's UI layer: Streamlit state and caching (state), plotly builders (figures*),
and heatmap pooling (pooling). lift_core stays UI-free; pages only place what this builds."""
