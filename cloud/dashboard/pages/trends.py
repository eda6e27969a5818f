from cloud.dashboard.ui import context
from cloud.dashboard.views.trends import render

render(context())
