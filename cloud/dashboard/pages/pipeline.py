from cloud.dashboard.ui import context
from cloud.dashboard.views.pipeline import render

render(context())
