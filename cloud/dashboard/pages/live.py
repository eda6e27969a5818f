from cloud.dashboard.ui import context
from cloud.dashboard.views.live import render

render(context())
