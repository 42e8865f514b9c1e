"""Pure core behind the components: no Dagster imports in profile loading or rendering."""
