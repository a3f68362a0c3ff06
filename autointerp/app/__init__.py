"""What the Streamlit pages need: views (data a page shows), figures, export and reports, rendering
of untrusted text, semantic search and UI pieces. Pages only lay out and call this package."""
