from django.urls import path

from tre_audit.reviews import views

app_name = "reviews"
urlpatterns = [
    path("queue/", views.review_queue, name="queue"),
    path("<int:submission_id>/", views.review_submit_view, name="submit"),
    path("<int:submission_id>/comments/", views.comment_add_view, name="comment"),
    path("<int:submission_id>/release/", views.release_view, name="release"),
    path("<int:submission_id>/claim/", views.claim_view, name="claim"),
]
